//! The MongoDB backend, on the official async driver; documents use string `_id`s chosen by the caller.

use std::time::Duration;

use mongodb::bson::{self, Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::{
    ApiKeyRecord, SegmentRecord, SessionEnd, SessionRecord, SessionStatus, SessionWithTranscript,
    StoreError, TranscriptStore, WordRecord,
};

/// The database used when the URL names none.
pub const DEFAULT_DATABASE: &str = "earshot";

/// How long an operation waits for a reachable server before failing, unless the URL sets
/// `serverSelectionTimeoutMS`. The driver's 30 s default would hide an outage from the writer's logs for
/// half a minute per attempt; the writer retries anyway.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);

const SESSIONS: &str = "sessions";
const SEGMENTS: &str = "segments";
const API_KEYS: &str = "api_keys";

/// A session as stored: the record with its id in `_id`, so the primary key makes `create_session`
/// idempotent without a separate unique index.
#[derive(Debug, Serialize, Deserialize)]
struct SessionDocument {
    #[serde(rename = "_id")]
    id: String,
    started_at_ms: i64,
    ended_at_ms: Option<i64>,
    client_addr: String,
    audio_ms: i64,
    close_reason: Option<String>,
    status: SessionStatus,
}

impl From<SessionDocument> for SessionRecord {
    fn from(document: SessionDocument) -> Self {
        SessionRecord {
            id: document.id,
            started_at_ms: document.started_at_ms,
            ended_at_ms: document.ended_at_ms,
            client_addr: document.client_addr,
            audio_ms: document.audio_ms,
            close_reason: document.close_reason,
            status: document.status,
        }
    }
}

/// A segment as stored. `_id` is `"{session_id}:{index}"`, which is unique because the index holds no `:`,
/// so a retried append hits the primary key.
#[derive(Debug, Serialize, Deserialize)]
struct SegmentDocument {
    #[serde(rename = "_id")]
    id: String,
    session_id: String,
    index: i32,
    text: String,
    start_ms: i64,
    end_ms: i64,
    confidence: f32,
    words: Vec<WordRecord>,
}

impl From<SegmentDocument> for SegmentRecord {
    fn from(document: SegmentDocument) -> Self {
        SegmentRecord {
            session_id: document.session_id,
            index: document.index,
            text: document.text,
            start_ms: document.start_ms,
            end_ms: document.end_ms,
            confidence: document.confidence,
            words: document.words,
        }
    }
}

/// An API key as stored: `_id` is its name, so the primary key keeps names unique.
#[derive(Debug, Serialize, Deserialize)]
struct KeyDocument {
    #[serde(rename = "_id")]
    name: String,
    key_hash: String,
    scopes: Vec<String>,
    max_sessions: Option<u32>,
    created_at_ms: i64,
    last_used_ms: Option<i64>,
}

impl From<KeyDocument> for ApiKeyRecord {
    fn from(document: KeyDocument) -> Self {
        ApiKeyRecord {
            name: document.name,
            key_hash: document.key_hash,
            scopes: document.scopes,
            max_sessions: document.max_sessions,
            created_at_ms: document.created_at_ms,
            last_used_ms: document.last_used_ms,
        }
    }
}

/// A session document as `get_session` and `list_sessions` decode it from the server's reply.
pub(crate) fn session_from_bson(bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    let document: SessionDocument =
        bson::deserialize_from_slice(bytes).map_err(mongodb::error::Error::from)?;
    Ok(document.into())
}

/// A segment document as `get_session` decodes it from the server's reply.
pub(crate) fn segment_from_bson(bytes: &[u8]) -> Result<SegmentRecord, StoreError> {
    let document: SegmentDocument =
        bson::deserialize_from_slice(bytes).map_err(mongodb::error::Error::from)?;
    Ok(document.into())
}

/// A [`TranscriptStore`] in a MongoDB database.
pub struct MongoStore {
    database: Database,
    sessions: Collection<SessionDocument>,
    segments: Collection<SegmentDocument>,
    keys: Collection<KeyDocument>,
}

impl MongoStore {
    /// Connects to the server a `mongodb://` URL names, checks it answers and creates the indexes.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(url).await?;
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        }
        if options.app_name.is_none() {
            options.app_name = Some("earshot".to_owned());
        }
        let database_name = database_name(&options);
        let client = Client::with_options(options)?;
        let database = client.database(&database_name);
        let store = Self {
            sessions: database.collection(SESSIONS),
            segments: database.collection(SEGMENTS),
            keys: database.collection(API_KEYS),
            database,
        };
        store.ensure_indexes().await?;
        Ok(store)
    }

    /// The database this store writes to.
    pub fn database_name(&self) -> &str {
        self.database.name()
    }

    async fn ensure_indexes(&self) -> Result<(), StoreError> {
        // Neither index includes `_id`: nx-27017, the MongoDB-compatible server the tests run against, fails
        // every later write to a collection with an index over `_id`. Ties on `started_at_ms` are rare enough
        // that sorting them by `_id` after the index scan costs nothing.
        self.sessions
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "started_at_ms": -1 })
                    .build(),
            )
            .await?;
        self.segments
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "session_id": 1, "index": 1 })
                    .build(),
            )
            .await?;
        self.keys
            .create_index(IndexModel::builder().keys(doc! { "key_hash": 1 }).build())
            .await?;
        Ok(())
    }
}

/// The database a URL names in its path, or [`DEFAULT_DATABASE`].
fn database_name(options: &ClientOptions) -> String {
    options
        .default_database
        .clone()
        .unwrap_or_else(|| DEFAULT_DATABASE.to_owned())
}

/// Serialises `value` for a `$setOnInsert`, leaving out `_id`: an upsert takes it from the filter.
fn insert_fields(value: &impl Serialize) -> Result<Document, StoreError> {
    let mut document = bson::serialize_to_document(value).map_err(mongodb::error::Error::from)?;
    document.remove("_id");
    Ok(document)
}

#[async_trait::async_trait]
impl TranscriptStore for MongoStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let document = SessionDocument {
            id: session.id.clone(),
            started_at_ms: session.started_at_ms,
            ended_at_ms: session.ended_at_ms,
            client_addr: session.client_addr.clone(),
            audio_ms: session.audio_ms,
            close_reason: session.close_reason.clone(),
            status: session.status,
        };
        // An upsert that only sets fields on insert is idempotent and, unlike insert-and-ignore-duplicate,
        // never turns a retry into an error to interpret.
        self.sessions
            .update_one(
                doc! { "_id": &session.id },
                doc! { "$setOnInsert": insert_fields(&document)? },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn append_segment(&self, segment: &SegmentRecord) -> Result<(), StoreError> {
        let segment = segment.normalised();
        let id = format!("{}:{}", segment.session_id, segment.index);
        let document = SegmentDocument {
            id: id.clone(),
            session_id: segment.session_id,
            index: segment.index,
            text: segment.text,
            start_ms: segment.start_ms,
            end_ms: segment.end_ms,
            confidence: segment.confidence,
            words: segment.words,
        };
        self.segments
            .update_one(
                doc! { "_id": id },
                doc! { "$setOnInsert": insert_fields(&document)? },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn finish_session(&self, id: &str, end: &SessionEnd) -> Result<(), StoreError> {
        let result = self
            .sessions
            .update_one(
                doc! { "_id": id },
                doc! { "$set": {
                    "ended_at_ms": end.ended_at_ms,
                    "audio_ms": end.audio_ms,
                    "close_reason": &end.close_reason,
                    "status": end.status.as_str(),
                } },
            )
            .await?;
        if result.matched_count == 0 {
            return Err(StoreError::SessionNotFound { id: id.to_owned() });
        }
        Ok(())
    }

    async fn list_sessions(
        &self,
        limit: usize,
        before_ms: Option<i64>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        // MongoDB reads a limit of 0 as "no limit" and a negative one as "one batch".
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let filter = match before_ms {
            Some(before_ms) => doc! { "started_at_ms": { "$lt": before_ms } },
            None => doc! {},
        };
        let mut cursor = self
            .sessions
            .find(filter)
            .sort(doc! { "started_at_ms": -1, "_id": -1 })
            .limit(limit)
            .await?;
        let mut sessions = Vec::new();
        while cursor.advance().await? {
            sessions.push(SessionRecord::from(cursor.deserialize_current()?));
        }
        Ok(sessions)
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionWithTranscript>, StoreError> {
        let Some(session) = self.sessions.find_one(doc! { "_id": id }).await? else {
            return Ok(None);
        };
        let mut cursor = self
            .segments
            .find(doc! { "session_id": id })
            .sort(doc! { "index": 1 })
            .await?;
        let mut segments = Vec::new();
        while cursor.advance().await? {
            segments.push(SegmentRecord::from(cursor.deserialize_current()?));
        }
        Ok(Some(SessionWithTranscript {
            session: session.into(),
            segments,
        }))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.database.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    async fn create_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let document = KeyDocument {
            name: key.name.clone(),
            key_hash: key.key_hash.clone(),
            scopes: key.scopes.clone(),
            max_sessions: key.max_sessions,
            created_at_ms: key.created_at_ms,
            last_used_ms: key.last_used_ms,
        };
        // An upsert that only sets fields on insert: it inserted exactly when the name was free.
        let result = self
            .keys
            .update_one(
                doc! { "_id": &key.name },
                doc! { "$setOnInsert": insert_fields(&document)? },
            )
            .upsert(true)
            .await?;
        if result.upserted_id.is_none() {
            return Err(StoreError::KeyExists {
                name: key.name.clone(),
            });
        }
        Ok(())
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut cursor = self.keys.find(doc! {}).sort(doc! { "_id": 1 }).await?;
        let mut keys = Vec::new();
        while cursor.advance().await? {
            keys.push(ApiKeyRecord::from(cursor.deserialize_current()?));
        }
        Ok(keys)
    }

    async fn find_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(self
            .keys
            .find_one(doc! { "key_hash": key_hash })
            .await?
            .map(ApiKeyRecord::from))
    }

    async fn touch_key(&self, name: &str, at_ms: i64) -> Result<(), StoreError> {
        // `$max` sets the field when it is null (null sorts before numbers) or smaller.
        self.keys
            .update_one(
                doc! { "_id": name },
                doc! { "$max": { "last_used_ms": at_ms } },
            )
            .await?;
        Ok(())
    }

    async fn revoke_key(&self, name: &str) -> Result<bool, StoreError> {
        let result = self.keys.delete_one(doc! { "_id": name }).await?;
        Ok(result.deleted_count > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn database_defaults_to_earshot_and_otherwise_comes_from_the_url_path() {
        let cases = [
            ("mongodb://127.0.0.1:27017", "earshot"),
            ("mongodb://127.0.0.1:27017/", "earshot"),
            ("mongodb://127.0.0.1:27017/?appName=x", "earshot"),
            (
                "mongodb://user:secret@h1:1,h2:2/transcripts?replicaSet=rs",
                "transcripts",
            ),
        ];
        for (url, expected) in cases {
            let options = ClientOptions::parse(url).await.unwrap();
            assert_eq!(database_name(&options), expected, "{url}");
        }
    }
}
