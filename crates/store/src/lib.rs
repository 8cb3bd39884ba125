//! Durable storage of final transcripts for Earshot: one [`TranscriptStore`] trait with SQLite and MongoDB backends.
//!
//! The gateway opens a store with [`open_store`] and writes through a [`StoreWriter`], whose bounded queue and
//! retry loop keep a slow or unavailable database away from the audio path. Both backends behave identically
//! (the same behavioural test suite runs against each): writes are idempotent, so a retried write never
//! duplicates a row, and ids are plain strings chosen by the caller.

mod mongo;
mod record;
mod sqlite;
mod writer;

use std::sync::Arc;

pub use mongo::MongoStore;
pub use record::{
    ApiKeyRecord, SegmentRecord, SessionEnd, SessionRecord, SessionStatus, SessionWithTranscript,
    WordRecord, now_ms,
};
pub use sqlite::SqliteStore;
pub use writer::{StoreOp, StoreWriteError, StoreWriter, StoreWriterStats};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Only the scheme is named: the rest of a URL may carry credentials.
    #[error(
        "unsupported store url scheme {scheme:?}: expected sqlite://PATH, sqlite::memory: or mongodb://HOST[:PORT][/DATABASE]"
    )]
    UnsupportedUrl { scheme: String },
    #[error("cannot create directory {path} for the sqlite database: {source}")]
    CreateDirectory {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sqlite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "sqlite database has schema version {found}, newer than version {supported} this build understands"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("mongodb error: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("session {id:?} does not exist")]
    SessionNotFound { id: String },
    #[error("an api key named {name:?} exists already")]
    KeyExists { name: String },
    #[error("stored {what} is unreadable: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("the sqlite worker stopped before answering")]
    WorkerStopped,
}

impl StoreError {
    /// Whether trying the same operation again can succeed: connection and database errors can heal, while a
    /// missing session, a bad URL or unreadable data stay as they are however often the write is repeated.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Sqlite(_) | StoreError::Mongo(_) | StoreError::WorkerStopped => true,
            StoreError::UnsupportedUrl { .. }
            | StoreError::CreateDirectory { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::SessionNotFound { .. }
            | StoreError::KeyExists { .. }
            | StoreError::Corrupt { .. } => false,
        }
    }
}

/// Where final transcripts are kept. Every method is idempotent where the docs say so, because the
/// [`StoreWriter`] retries failed writes and a write may have landed before its acknowledgement was lost.
#[async_trait::async_trait]
pub trait TranscriptStore: Send + Sync {
    /// `"sqlite"` or `"mongodb"`, for logs and metrics labels.
    fn backend(&self) -> &'static str;

    /// Stores a new session; creating an id that already exists leaves the stored session untouched.
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError>;

    /// Stores a final segment; the first write for a `(session_id, index)` wins and later ones are no-ops.
    ///
    /// The session row is not required to exist (neither backend enforces it), so an append is never a
    /// write that can not succeed; a segment whose session is never created is simply not reachable.
    async fn append_segment(&self, segment: &SegmentRecord) -> Result<(), StoreError>;

    /// Records how a session ended. Repeating it is harmless; an unknown id is [`StoreError::SessionNotFound`].
    async fn finish_session(&self, id: &str, end: &SessionEnd) -> Result<(), StoreError>;

    /// Newest first (ties broken by id, descending); `before_ms` keeps only sessions that started strictly
    /// before it, which is how callers page: pass the last `started_at_ms` they saw.
    async fn list_sessions(
        &self,
        limit: usize,
        before_ms: Option<i64>,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// The session and its segments ordered by index, or `None` for an unknown id.
    async fn get_session(&self, id: &str) -> Result<Option<SessionWithTranscript>, StoreError>;

    /// Checks the database answers, for readiness probes.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a new API key; a name already taken is [`StoreError::KeyExists`] and changes nothing.
    async fn create_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;

    /// Every key, ordered by name.
    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// The key whose hash is `key_hash`, or `None`.
    async fn find_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Records a use of key `name` at `at_ms`; an earlier time than the stored one, or an unknown name,
    /// changes nothing.
    async fn touch_key(&self, name: &str, at_ms: i64) -> Result<(), StoreError>;

    /// Deletes key `name`; `false` when there was none.
    async fn revoke_key(&self, name: &str) -> Result<bool, StoreError>;
}

/// Opens the store a URL names:
///
/// - `sqlite://PATH` — a file, created with its parent directories (`sqlite:///abs/path.db` for an absolute path);
/// - `sqlite::memory:` — a private in-memory database, for tests;
/// - `mongodb://...` — the database is the URL's path, `earshot` when it has none. `mongodb+srv://` URLs are
///   passed to the driver too, which refuses them with a clear error: the driver's `dns-resolver` feature is
///   left off to keep the build small.
///
/// A MongoDB store checks the server answers and creates its indexes before returning.
pub async fn open_store(url: &str) -> Result<Arc<dyn TranscriptStore>, StoreError> {
    if url == "sqlite::memory:" {
        return Ok(Arc::new(SqliteStore::open_in_memory().await?));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::UnsupportedUrl {
                scheme: "sqlite".to_owned(),
            });
        }
        return Ok(Arc::new(SqliteStore::open(path).await?));
    }
    if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
        return Ok(Arc::new(MongoStore::connect(url).await?));
    }
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    Err(StoreError::UnsupportedUrl {
        scheme: scheme.to_owned(),
    })
}

/// `url` fit for a log line or an error message: a password in it (`user:PASSWORD@host`, or a
/// query option whose name contains `password`) is replaced by `***`.
pub fn redact_url(url: &str) -> String {
    const HIDDEN: &str = "***";
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:{HIDDEN}@{hosts}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let options: Vec<String> = query
                .split('&')
                .map(|option| match option.split_once('=') {
                    Some((name, _)) if name.to_ascii_lowercase().contains("password") => {
                        format!("{name}={HIDDEN}")
                    }
                    _ => option.to_owned(),
                })
                .collect();
            format!("{path}?{}", options.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// The decoding of stored rows and documents, without a running database, for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub mod fuzzing {
    use crate::{SegmentRecord, SessionRecord, SessionWithTranscript, StoreError};

    pub use mongodb::bson;
    pub use rusqlite;

    /// Creates the SQLite schema on `connection`, as [`crate::SqliteStore::open`] does.
    pub fn sqlite_prepare(
        connection: rusqlite::Connection,
    ) -> Result<rusqlite::Connection, StoreError> {
        crate::sqlite::prepare(connection)
    }

    /// What [`crate::TranscriptStore::get_session`] returns for `id` from the rows in `connection`.
    pub fn sqlite_read_session(
        connection: &mut rusqlite::Connection,
        id: &str,
    ) -> Result<Option<SessionWithTranscript>, StoreError> {
        crate::sqlite::read_session(connection, id)
    }

    /// A MongoDB session document, as the store decodes it from a reply.
    pub fn mongo_session(bytes: &[u8]) -> Result<SessionRecord, StoreError> {
        crate::mongo::session_from_bson(bytes)
    }

    /// A MongoDB segment document, as the store decodes it from a reply.
    pub fn mongo_segment(bytes: &[u8]) -> Result<SegmentRecord, StoreError> {
        crate::mongo::segment_from_bson(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_store_rejects_other_schemes_without_echoing_credentials() {
        let error = open_store("postgres://admin:hunter2@db/earshot")
            .await
            .err()
            .unwrap();
        let message = error.to_string();
        assert!(matches!(error, StoreError::UnsupportedUrl { .. }));
        assert!(message.contains("\"postgres\""), "{message}");
        assert!(
            message.contains("sqlite://PATH") && message.contains("mongodb://"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn redacted_urls_keep_everything_but_passwords() {
        let cases = [
            (
                "mongodb://earshot:s3cr%40t@db1:27017,db2/transcripts?replicaSet=rs",
                "mongodb://earshot:***@db1:27017,db2/transcripts?replicaSet=rs",
            ),
            (
                "mongodb://db/x?tls=true&tlsCertificateKeyFilePassword=pw&authSource=admin",
                "mongodb://db/x?tls=true&tlsCertificateKeyFilePassword=***&authSource=admin",
            ),
            ("mongodb://user@db/x", "mongodb://user@db/x"),
            ("mongodb://db:27017", "mongodb://db:27017"),
            (
                "sqlite:///var/lib/earshot/t.sqlite3",
                "sqlite:///var/lib/earshot/t.sqlite3",
            ),
            ("sqlite::memory:", "sqlite::memory:"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[tokio::test]
    async fn open_store_rejects_sqlite_url_without_path() {
        let error = open_store("sqlite://").await.err().unwrap();
        assert!(
            matches!(error, StoreError::UnsupportedUrl { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn open_store_opens_in_memory_sqlite() {
        let store = open_store("sqlite::memory:").await.unwrap();
        assert_eq!(store.backend(), "sqlite");
        store.ping().await.unwrap();
        assert!(store.list_sessions(10, None).await.unwrap().is_empty());
    }
}
