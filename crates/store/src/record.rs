//! The records the store keeps: one row per session and one per final segment, with its words.

use serde::{Deserialize, Serialize};

/// The current time in Unix epoch milliseconds, as every record keeps its times.
pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// One client session as the gateway saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Caller-chosen string id; the stores never generate ids, so a retried create lands on the same row.
    pub id: String,
    /// Unix epoch milliseconds.
    pub started_at_ms: i64,
    /// Unix epoch milliseconds; `None` while the session is active.
    pub ended_at_ms: Option<i64>,
    pub client_addr: String,
    /// Milliseconds of audio received.
    pub audio_ms: i64,
    /// Why the session closed, e.g. `normal`, `client_closed`, `buffer_limit`, `engine_failure`.
    pub close_reason: Option<String>,
    pub status: SessionStatus,
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Active,
    Completed,
    Failed,
    /// The gateway stopped before the session could end (forced shutdown or crash).
    Interrupted,
}

impl SessionStatus {
    /// The lower-case name used in every backend and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Completed => "completed",
            SessionStatus::Failed => "failed",
            SessionStatus::Interrupted => "interrupted",
        }
    }

    /// Inverse of [`SessionStatus::as_str`]; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "active" => Some(SessionStatus::Active),
            "completed" => Some(SessionStatus::Completed),
            "failed" => Some(SessionStatus::Failed),
            "interrupted" => Some(SessionStatus::Interrupted),
            _ => None,
        }
    }
}

impl std::fmt::Display for SessionStatus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One recognised word with its timing inside the session's audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordRecord {
    pub word: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub confidence: f32,
}

/// One final segment of a session's transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub session_id: String,
    /// Position in the transcript; `(session_id, index)` identifies a segment, so a retried append is a no-op.
    pub index: i32,
    pub text: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub confidence: f32,
    pub words: Vec<WordRecord>,
}

impl SegmentRecord {
    /// The segment as every backend stores it: a confidence that is not a finite number becomes 0.0.
    ///
    /// JSON-backed stores cannot hold NaN or infinities, and a write that can never succeed would stall the
    /// [`crate::StoreWriter`] queue behind it; losing one score is better than losing the transcript.
    pub fn normalised(&self) -> SegmentRecord {
        let mut segment = self.clone();
        segment.confidence = finite_or_zero(segment.confidence);
        for word in &mut segment.words {
            word.confidence = finite_or_zero(word.confidence);
        }
        segment
    }
}

fn finite_or_zero(value: f32) -> f32 {
    if value.is_finite() { value } else { 0.0 }
}

/// What the gateway knows when a session ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEnd {
    pub ended_at_ms: i64,
    pub audio_ms: i64,
    pub close_reason: String,
    pub status: SessionStatus,
}

/// A session with its whole transcript, segments ordered by index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionWithTranscript {
    pub session: SessionRecord,
    pub segments: Vec<SegmentRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serialises_lower_case_and_parses_back() {
        for status in [
            SessionStatus::Active,
            SessionStatus::Completed,
            SessionStatus::Failed,
        ] {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(SessionStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(SessionStatus::parse("Active"), None);
    }

    #[test]
    fn normalised_replaces_non_finite_confidences_with_zero() {
        let segment = SegmentRecord {
            session_id: "s".into(),
            index: 0,
            text: "hi".into(),
            start_ms: 0,
            end_ms: 10,
            confidence: f32::NAN,
            words: vec![WordRecord {
                word: "hi".into(),
                start_ms: 0,
                end_ms: 10,
                confidence: f32::INFINITY,
            }],
        };
        let normalised = segment.normalised();
        assert_eq!(normalised.confidence, 0.0);
        assert_eq!(normalised.words[0].confidence, 0.0);
        assert_eq!(normalised.text, "hi");
    }
}

/// An API key as stored: its name, what it may do and its limits, and only a hash of the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Unique; how logs, `keys list`, `keys revoke` and session ownership refer to the key.
    pub name: String,
    /// The lower-case hex SHA-256 of the key. Keys are long random strings, so a fast hash is enough.
    pub key_hash: String,
    /// Scope names (`stream`, `read`, `admin`), in the order given.
    pub scopes: Vec<String>,
    /// Concurrent sessions the key may hold; `None` for no limit of its own.
    pub max_sessions: Option<u32>,
    /// Unix epoch milliseconds.
    pub created_at_ms: i64,
    /// Unix epoch milliseconds of the latest use recorded; `None` if never used.
    pub last_used_ms: Option<i64>,
}
