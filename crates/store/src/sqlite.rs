//! The embedded SQLite backend: one connection, driven on tokio's blocking pool so no query runs on the reactor.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::{
    ApiKeyRecord, SegmentRecord, SessionEnd, SessionRecord, SessionStatus, SessionWithTranscript,
    StoreError, TranscriptStore, WordRecord,
};

/// The schema version this build writes, kept in `PRAGMA user_version` so a later build can migrate.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id            TEXT PRIMARY KEY NOT NULL,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER,
    client_addr   TEXT NOT NULL,
    audio_ms      INTEGER NOT NULL,
    close_reason  TEXT,
    status        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_newest_first ON sessions (started_at_ms DESC, id DESC);
-- No foreign key to sessions: MongoDB has none either, and a segment whose session row is missing must
-- still be a write that succeeds, or the retrying writer would stall behind it.
CREATE TABLE IF NOT EXISTS segments (
    session_id    TEXT NOT NULL,
    segment_index INTEGER NOT NULL,
    text          TEXT NOT NULL,
    start_ms      INTEGER NOT NULL,
    end_ms        INTEGER NOT NULL,
    confidence    REAL NOT NULL,
    words_json    TEXT NOT NULL,
    PRIMARY KEY (session_id, segment_index)
) WITHOUT ROWID;
-- API keys: never the key, only its SHA-256 (hex). Scopes are a JSON array of names.
CREATE TABLE IF NOT EXISTS api_keys (
    name          TEXT PRIMARY KEY NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,
    scopes_json   TEXT NOT NULL,
    max_sessions  INTEGER,
    created_at_ms INTEGER NOT NULL,
    last_used_ms  INTEGER
);
";

const KEY_COLUMNS: &str = "name, key_hash, scopes_json, max_sessions, created_at_ms, last_used_ms";

const SESSION_COLUMNS: &str =
    "id, started_at_ms, ended_at_ms, client_addr, audio_ms, close_reason, status";

/// A [`TranscriptStore`] in a SQLite file (or in memory, for tests).
pub struct SqliteStore {
    // One connection is enough for the write rate of final segments, and a mutex around it is simpler than a
    // pool; it is only ever locked on the blocking pool, never across an `.await`.
    connection: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, with its parent directories.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let connection = run_blocking(move || {
            if let Some(parent) = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDirectory {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            let connection = Connection::open(&path)?;
            // WAL lets readers (a CLI listing transcripts) run beside the gateway's writes. With
            // synchronous=NORMAL a commit survives a crash of the process; only an operating-system crash or
            // power loss can roll back the last commits, and an fsync per segment would cap the write rate.
            connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| {
                row.get::<_, String>(0)
            })?;
            connection.pragma_update(None, "synchronous", "NORMAL")?;
            prepare(connection)
        })
        .await?;
        Ok(Self::from_connection(connection))
    }

    /// A private database that lives as long as the store, for tests.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let connection = run_blocking(|| prepare(Connection::open_in_memory()?)).await?;
        Ok(Self::from_connection(connection))
    }

    fn from_connection(connection: Connection) -> Self {
        Self {
            connection: Arc::new(Mutex::new(connection)),
        }
    }

    /// Runs `work` against the connection on the blocking pool.
    async fn with_connection<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        run_blocking(move || {
            // A panic while the lock was held cannot leave the connection half-written: SQLite rolls back an
            // unfinished transaction when its guard drops, so a poisoned lock is safe to keep using.
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut connection)
        })
        .await
    }
}

async fn run_blocking<T, F>(work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| StoreError::WorkerStopped)?
}

/// Sets connection options and creates or checks the schema.
pub(crate) fn prepare(connection: Connection) -> Result<Connection, StoreError> {
    // Another process (a CLI reading transcripts) may hold the write lock for a moment.
    connection.busy_timeout(Duration::from_secs(5))?;
    let found: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    connection.execute_batch(SCHEMA)?;
    connection.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(connection)
}

fn session_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(SessionRecord, String)> {
    let status_name: String = row.get(6)?;
    let session = SessionRecord {
        id: row.get(0)?,
        started_at_ms: row.get(1)?,
        ended_at_ms: row.get(2)?,
        client_addr: row.get(3)?,
        audio_ms: row.get(4)?,
        close_reason: row.get(5)?,
        // Replaced by the parsed status below; rusqlite's row closure cannot return our error type.
        status: SessionStatus::Active,
    };
    Ok((session, status_name))
}

fn with_parsed_status(
    (mut session, status_name): (SessionRecord, String),
) -> Result<SessionRecord, StoreError> {
    session.status = SessionStatus::parse(&status_name).ok_or_else(|| StoreError::Corrupt {
        what: "session status",
        detail: format!("session {:?} has status {status_name:?}", session.id),
    })?;
    Ok(session)
}

/// A session with its segments, decoded from the rows as stored: a status or words that do not parse are
/// [`StoreError::Corrupt`], a column of the wrong type is a [`StoreError::Sqlite`].
pub(crate) fn read_session(
    connection: &mut Connection,
    id: &str,
) -> Result<Option<SessionWithTranscript>, StoreError> {
    // One read transaction, so a segment appended meanwhile cannot make the two reads disagree.
    let transaction = connection.transaction()?;
    let Some(row) = transaction
        .prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"
        ))?
        .query_row(params![id], session_from_row)
        .optional()?
    else {
        return Ok(None);
    };
    let session = with_parsed_status(row)?;
    let rows = transaction
        .prepare_cached(
            "SELECT segment_index, text, start_ms, end_ms, confidence, words_json
             FROM segments WHERE session_id = ?1 ORDER BY segment_index",
        )?
        .query_map(params![id], |row| {
            Ok((
                row.get::<_, i32>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, f64>(4)?,
                row.get::<_, String>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut segments = Vec::with_capacity(rows.len());
    for (index, text, start_ms, end_ms, confidence, words_json) in rows {
        let words: Vec<WordRecord> =
            serde_json::from_str(&words_json).map_err(|error| StoreError::Corrupt {
                what: "segment words",
                detail: format!("segment {index} of session {id:?}: {error}"),
            })?;
        segments.push(SegmentRecord {
            session_id: id.to_owned(),
            index,
            text,
            start_ms,
            end_ms,
            // Stored from an f32, so narrowing back is exact.
            confidence: confidence as f32,
            words,
        });
    }
    transaction.commit()?;
    Ok(Some(SessionWithTranscript { session, segments }))
}

/// A key row, with its scopes still as JSON (decoded by [`key_with_scopes`]).
fn key_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(ApiKeyRecord, String)> {
    let key = ApiKeyRecord {
        name: row.get(0)?,
        key_hash: row.get(1)?,
        scopes: Vec::new(),
        max_sessions: row.get(3)?,
        created_at_ms: row.get(4)?,
        last_used_ms: row.get(5)?,
    };
    Ok((key, row.get(2)?))
}

fn key_with_scopes(
    (mut key, scopes_json): (ApiKeyRecord, String),
) -> Result<ApiKeyRecord, StoreError> {
    key.scopes = serde_json::from_str(&scopes_json).map_err(|error| StoreError::Corrupt {
        what: "api key scopes",
        detail: format!("key {:?}: {error}", key.name),
    })?;
    Ok(key)
}

#[async_trait::async_trait]
impl TranscriptStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let session = session.clone();
        self.with_connection(move |connection| {
            connection
                .prepare_cached(
                    "INSERT INTO sessions (id, started_at_ms, ended_at_ms, client_addr, audio_ms, close_reason, status)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    session.id,
                    session.started_at_ms,
                    session.ended_at_ms,
                    session.client_addr,
                    session.audio_ms,
                    session.close_reason,
                    session.status.as_str(),
                ])?;
            Ok(())
        })
        .await
    }

    async fn append_segment(&self, segment: &SegmentRecord) -> Result<(), StoreError> {
        let segment = segment.normalised();
        self.with_connection(move |connection| {
            let words_json = serde_json::to_string(&segment.words).map_err(|error| {
                StoreError::Corrupt { what: "segment words", detail: error.to_string() }
            })?;
            connection
                .prepare_cached(
                    "INSERT INTO segments (session_id, segment_index, text, start_ms, end_ms, confidence, words_json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (session_id, segment_index) DO NOTHING",
                )?
                .execute(params![
                    segment.session_id,
                    segment.index,
                    segment.text,
                    segment.start_ms,
                    segment.end_ms,
                    f64::from(segment.confidence),
                    words_json,
                ])?;
            Ok(())
        })
        .await
    }

    async fn finish_session(&self, id: &str, end: &SessionEnd) -> Result<(), StoreError> {
        let id = id.to_owned();
        let end = end.clone();
        self.with_connection(move |connection| {
            let n_updated = connection
                .prepare_cached(
                    "UPDATE sessions SET ended_at_ms = ?2, audio_ms = ?3, close_reason = ?4, status = ?5
                     WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    end.ended_at_ms,
                    end.audio_ms,
                    end.close_reason,
                    end.status.as_str()
                ])?;
            if n_updated == 0 {
                return Err(StoreError::SessionNotFound { id });
            }
            Ok(())
        })
        .await
    }

    async fn list_sessions(
        &self,
        limit: usize,
        before_ms: Option<i64>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        // SQLite reads a negative LIMIT as "no limit", so clamp rather than wrap.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_connection(move |connection| {
            let rows = match before_ms {
                Some(before_ms) => connection
                    .prepare_cached(&format!(
                        "SELECT {SESSION_COLUMNS} FROM sessions WHERE started_at_ms < ?1
                         ORDER BY started_at_ms DESC, id DESC LIMIT ?2"
                    ))?
                    .query_map(params![before_ms, limit], session_from_row)?
                    .collect::<Result<Vec<_>, _>>()?,
                None => connection
                    .prepare_cached(&format!(
                        "SELECT {SESSION_COLUMNS} FROM sessions
                         ORDER BY started_at_ms DESC, id DESC LIMIT ?1"
                    ))?
                    .query_map(params![limit], session_from_row)?
                    .collect::<Result<Vec<_>, _>>()?,
            };
            rows.into_iter().map(with_parsed_status).collect()
        })
        .await
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionWithTranscript>, StoreError> {
        let id = id.to_owned();
        self.with_connection(move |connection| read_session(connection, &id))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_connection(|connection| {
            connection.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }

    async fn create_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let key = key.clone();
        self.with_connection(move |connection| {
            let scopes_json =
                serde_json::to_string(&key.scopes).map_err(|error| StoreError::Corrupt {
                    what: "api key scopes",
                    detail: error.to_string(),
                })?;
            let inserted = connection
                .prepare_cached(&format!(
                    "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT DO NOTHING"
                ))?
                .execute(params![
                    key.name,
                    key.key_hash,
                    scopes_json,
                    key.max_sessions,
                    key.created_at_ms,
                    key.last_used_ms,
                ])?;
            if inserted == 0 {
                return Err(StoreError::KeyExists { name: key.name });
            }
            Ok(())
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.with_connection(|connection| {
            let rows = connection
                .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY name"))?
                .query_map([], key_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(key_with_scopes).collect()
        })
        .await
    }

    async fn find_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let key_hash = key_hash.to_owned();
        self.with_connection(move |connection| {
            connection
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1"
                ))?
                .query_row(params![key_hash], key_from_row)
                .optional()?
                .map(key_with_scopes)
                .transpose()
        })
        .await
    }

    async fn touch_key(&self, name: &str, at_ms: i64) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.with_connection(move |connection| {
            connection
                .prepare_cached(
                    "UPDATE api_keys SET last_used_ms = ?2
                     WHERE name = ?1 AND (last_used_ms IS NULL OR last_used_ms < ?2)",
                )?
                .execute(params![name, at_ms])?;
            Ok(())
        })
        .await
    }

    async fn revoke_key(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.with_connection(move |connection| {
            let deleted = connection
                .prepare_cached("DELETE FROM api_keys WHERE name = ?1")?
                .execute(params![name])?;
            Ok(deleted > 0)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_a_database_with_a_newer_schema_version() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("transcripts.db");
        drop(SqliteStore::open(&path).await.unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let error = SqliteStore::open(&path).await.err().unwrap();
        assert!(
            matches!(
                error,
                StoreError::SchemaTooNew {
                    found: 2,
                    supported: 1
                }
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn reports_an_unknown_status_as_corrupt_instead_of_panicking() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store
            .with_connection(|connection| {
                connection.execute(
                    "INSERT INTO sessions VALUES ('s', 1, NULL, 'addr', 0, NULL, 'paused')",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let error = store.get_session("s").await.err().unwrap();
        assert!(
            matches!(
                error,
                StoreError::Corrupt {
                    what: "session status",
                    ..
                }
            ),
            "{error}"
        );
        assert!(!error.is_retryable());
    }

    #[tokio::test]
    async fn reports_unreadable_words_as_corrupt() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store
            .with_connection(|connection| {
                connection.execute_batch(
                    "INSERT INTO sessions VALUES ('s', 1, NULL, 'addr', 0, NULL, 'active');
                     INSERT INTO segments VALUES ('s', 0, 'hi', 0, 10, 0.5, 'not json');",
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let error = store.get_session("s").await.err().unwrap();
        assert!(
            matches!(
                error,
                StoreError::Corrupt {
                    what: "segment words",
                    ..
                }
            ),
            "{error}"
        );
    }
}
