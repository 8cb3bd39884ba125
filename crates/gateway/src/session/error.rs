//! The one place where a session's problems meet the wire: each [`SessionError`] yields its
//! `error.code`, its message, and (when fatal) the [`CloseReason`] that gives the close code
//! and `closed.reason` (docs/websocket.md, "Error codes").

use std::time::Duration;

use tonic::Code;

use crate::engine_link::OpenError;

/// WebSocket close codes of protocol v1.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const POLICY: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const ENGINE_FAILURE: u16 = 1011;
    pub const SERVICE_RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// How a session ended, for the `closed` message, the close frame, logs, metrics and storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    Normal,
    ClientClosed,
    BufferLimit,
    FrameTooLarge,
    MessageTooBig,
    InvalidInput,
    EngineFailure,
    Overloaded,
    IdleTimeout,
    FirstMessageTimeout,
    PingTimeout,
    SlowConsumer,
    TooFast,
    ServerShutdown,
    Internal,
}

impl CloseReason {
    pub const ALL: [CloseReason; 15] = [
        Self::Normal,
        Self::ClientClosed,
        Self::BufferLimit,
        Self::FrameTooLarge,
        Self::MessageTooBig,
        Self::InvalidInput,
        Self::EngineFailure,
        Self::Overloaded,
        Self::IdleTimeout,
        Self::FirstMessageTimeout,
        Self::PingTimeout,
        Self::SlowConsumer,
        Self::TooFast,
        Self::ServerShutdown,
        Self::Internal,
    ];

    /// `closed.reason`, the stored close reason and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::ClientClosed => "client_closed",
            Self::BufferLimit => "buffer_limit",
            Self::FrameTooLarge => "frame_too_large",
            Self::MessageTooBig => "message_too_big",
            Self::InvalidInput => "invalid_input",
            Self::EngineFailure => "engine_failure",
            Self::Overloaded => "overloaded",
            Self::IdleTimeout => "idle_timeout",
            Self::FirstMessageTimeout => "first_message_timeout",
            Self::PingTimeout => "ping_timeout",
            Self::SlowConsumer => "slow_consumer",
            Self::TooFast => "too_fast",
            Self::ServerShutdown => "server_shutdown",
            Self::Internal => "internal",
        }
    }

    pub fn close_code(self) -> u16 {
        match self {
            Self::Normal | Self::ClientClosed | Self::IdleTimeout => close_code::NORMAL,
            Self::InvalidInput => close_code::UNSUPPORTED_DATA,
            Self::BufferLimit
            | Self::FrameTooLarge
            | Self::FirstMessageTimeout
            | Self::PingTimeout
            | Self::SlowConsumer
            | Self::TooFast => close_code::POLICY,
            Self::MessageTooBig => close_code::MESSAGE_TOO_BIG,
            Self::EngineFailure | Self::Internal => close_code::ENGINE_FAILURE,
            Self::ServerShutdown => close_code::SERVICE_RESTART,
            Self::Overloaded => close_code::TRY_AGAIN_LATER,
        }
    }

    /// Whether the session's audio ended the way its client meant it to (stored as completed).
    pub fn is_clean(self) -> bool {
        matches!(
            self,
            Self::Normal | Self::ClientClosed | Self::IdleTimeout | Self::ServerShutdown
        )
    }
}

/// Everything that can go wrong in a session, with what the client is told.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    #[error("text frames must be control messages (config, finalize, close, keepalive, ping): {0}")]
    InvalidMessage(String),
    #[error(
        "binary frame of {len} bytes is not a whole number of {sample_bytes}-byte {encoding} samples"
    )]
    InvalidAudio {
        len: usize,
        sample_bytes: usize,
        encoding: &'static str,
    },
    /// The engine refused the audio (INVALID_ARGUMENT).
    #[error("engine: {0}")]
    EngineRefusedAudio(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("config is only accepted before the first audio frame; it was ignored")]
    ConfigAfterAudio,
    #[error(
        "binary frame of {len} bytes is larger than the {limit}-byte limit; send smaller frames"
    )]
    FrameTooLarge { len: usize, limit: usize },
    #[error("a message over the {limit}-byte limit was refused unread")]
    MessageTooBig { limit: usize },
    #[error(
        "more than {limit} bytes of audio are waiting for the engine; send audio at real-time pace (slow down when told to)"
    )]
    BufferLimit { limit: usize },
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    EngineUnavailable(String),
    #[error("{0}")]
    EngineFailure(String),
    #[error("no audio and no keepalive for {} s; send keepalive to keep a quiet session open", .0.as_secs())]
    IdleTimeout(Duration),
    #[error("no message within {} s of connecting", .0.as_secs())]
    FirstMessageTimeout(Duration),
    #[error("two pings went unanswered")]
    PingTimeout,
    #[error("the client did not read for {} s; closing", .0.as_secs())]
    SlowConsumer(Duration),
    #[error(
        "audio arrives faster than {pace}x real time (over a {window_secs} s window); send it at most at that pace"
    )]
    TooFast { pace: f64, window_secs: u64 },
    #[error("the server is restarting; reconnect to continue")]
    ServerShutdown,
    #[error("internal error; the session was closed")]
    Internal,
}

impl SessionError {
    /// The `error.code` on the wire.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidMessage(_) => "invalid_message",
            Self::InvalidAudio { .. } | Self::EngineRefusedAudio(_) => "invalid_audio",
            Self::InvalidParameter(_) => "invalid_parameter",
            Self::ConfigAfterAudio => "config_after_audio",
            Self::FrameTooLarge { .. } => "frame_too_large",
            Self::MessageTooBig { .. } => "message_too_big",
            Self::BufferLimit { .. } => "buffer_limit",
            Self::Overloaded(_) => "overloaded",
            Self::EngineUnavailable(_) => "engine_unavailable",
            Self::EngineFailure(_) => "engine_failure",
            Self::IdleTimeout(_) => "idle_timeout",
            Self::FirstMessageTimeout(_) => "first_message_timeout",
            Self::PingTimeout => "ping_timeout",
            Self::SlowConsumer(_) => "slow_consumer",
            Self::TooFast { .. } => "too_fast",
            Self::ServerShutdown => "server_shutdown",
            Self::Internal => "internal",
        }
    }

    /// How the session ends because of it; `None` for a notice the session survives.
    pub fn close_reason(&self) -> Option<CloseReason> {
        Some(match self {
            Self::ConfigAfterAudio => return None,
            Self::InvalidMessage(_)
            | Self::InvalidAudio { .. }
            | Self::EngineRefusedAudio(_)
            | Self::InvalidParameter(_) => CloseReason::InvalidInput,
            Self::FrameTooLarge { .. } => CloseReason::FrameTooLarge,
            Self::MessageTooBig { .. } => CloseReason::MessageTooBig,
            Self::BufferLimit { .. } => CloseReason::BufferLimit,
            Self::Overloaded(_) => CloseReason::Overloaded,
            Self::EngineUnavailable(_) | Self::EngineFailure(_) => CloseReason::EngineFailure,
            Self::IdleTimeout(_) => CloseReason::IdleTimeout,
            Self::FirstMessageTimeout(_) => CloseReason::FirstMessageTimeout,
            Self::PingTimeout => CloseReason::PingTimeout,
            Self::SlowConsumer(_) => CloseReason::SlowConsumer,
            Self::TooFast { .. } => CloseReason::TooFast,
            Self::ServerShutdown => CloseReason::ServerShutdown,
            Self::Internal => CloseReason::Internal,
        })
    }

    /// Whether the engine's remaining finals are delivered to the client before `closed`
    /// (the audio ended on purpose), or only stored after the close (the session is refused).
    pub fn delivers_finals(&self) -> bool {
        matches!(self, Self::IdleTimeout(_) | Self::ServerShutdown)
    }

    /// The `stt_errors_total` kind it counts under, if it is one.
    pub fn metric_kind(&self) -> Option<&'static str> {
        match self {
            Self::InvalidMessage(_)
            | Self::InvalidAudio { .. }
            | Self::InvalidParameter(_)
            | Self::FrameTooLarge { .. }
            | Self::MessageTooBig { .. } => Some("websocket"),
            Self::Overloaded(_) | Self::EngineUnavailable(_) => Some("grpc"),
            Self::EngineFailure(_) | Self::EngineRefusedAudio(_) => Some("engine"),
            Self::Internal => Some("internal"),
            _ => None,
        }
    }

    /// A stream the engine ended with `status`.
    pub fn from_engine_status(status: &tonic::Status, idle_timeout: Duration) -> Self {
        match status.code() {
            Code::ResourceExhausted => Self::Overloaded(format!("engine: {}", status.message())),
            Code::InvalidArgument => Self::EngineRefusedAudio(status.message().to_string()),
            // The engine's own idle timer: the session was idle, not broken.
            Code::OutOfRange => Self::IdleTimeout(idle_timeout),
            _ => Self::EngineFailure(format!("engine: {}", status.message())),
        }
    }
}

impl From<OpenError> for SessionError {
    fn from(err: OpenError) -> Self {
        match err {
            OpenError::Overloaded { .. } => Self::Overloaded(err.to_string()),
            OpenError::Unavailable { .. } => Self::EngineUnavailable(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/websocket.md's error table, row by row: code, close code, `closed.reason`.
    #[test]
    fn every_error_maps_to_its_documented_code_and_close() {
        let secs = Duration::from_secs(10);
        type Row = (SessionError, &'static str, Option<(u16, &'static str)>);
        let rows: Vec<Row> = vec![
            (
                SessionError::InvalidMessage("x".into()),
                "invalid_message",
                Some((1003, "invalid_input")),
            ),
            (
                SessionError::InvalidAudio {
                    len: 3,
                    sample_bytes: 2,
                    encoding: "pcm_s16le",
                },
                "invalid_audio",
                Some((1003, "invalid_input")),
            ),
            (
                SessionError::InvalidParameter("x".into()),
                "invalid_parameter",
                Some((1003, "invalid_input")),
            ),
            (SessionError::ConfigAfterAudio, "config_after_audio", None),
            (
                SessionError::FrameTooLarge { len: 2, limit: 1 },
                "frame_too_large",
                Some((1008, "frame_too_large")),
            ),
            (
                SessionError::MessageTooBig { limit: 1 },
                "message_too_big",
                Some((1009, "message_too_big")),
            ),
            (
                SessionError::BufferLimit { limit: 1 },
                "buffer_limit",
                Some((1008, "buffer_limit")),
            ),
            (
                SessionError::Overloaded("x".into()),
                "overloaded",
                Some((1013, "overloaded")),
            ),
            (
                SessionError::EngineUnavailable("x".into()),
                "engine_unavailable",
                Some((1011, "engine_failure")),
            ),
            (
                SessionError::EngineFailure("x".into()),
                "engine_failure",
                Some((1011, "engine_failure")),
            ),
            (
                SessionError::IdleTimeout(secs),
                "idle_timeout",
                Some((1000, "idle_timeout")),
            ),
            (
                SessionError::FirstMessageTimeout(secs),
                "first_message_timeout",
                Some((1008, "first_message_timeout")),
            ),
            (
                SessionError::PingTimeout,
                "ping_timeout",
                Some((1008, "ping_timeout")),
            ),
            (
                SessionError::SlowConsumer(secs),
                "slow_consumer",
                Some((1008, "slow_consumer")),
            ),
            (
                SessionError::TooFast {
                    pace: 4.0,
                    window_secs: 10,
                },
                "too_fast",
                Some((1008, "too_fast")),
            ),
            (
                SessionError::ServerShutdown,
                "server_shutdown",
                Some((1012, "server_shutdown")),
            ),
            (SessionError::Internal, "internal", Some((1011, "internal"))),
        ];
        for (error, code, close) in rows {
            assert_eq!(error.code(), code);
            let got = error
                .close_reason()
                .map(|reason| (reason.close_code(), reason.as_str()));
            assert_eq!(got, close, "{code}");
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn engine_statuses_map_to_session_errors() {
        let idle = Duration::from_secs(60);
        let map = |code| SessionError::from_engine_status(&tonic::Status::new(code, "m"), idle);
        assert_eq!(map(Code::ResourceExhausted).code(), "overloaded");
        assert_eq!(map(Code::InvalidArgument).code(), "invalid_audio");
        assert_eq!(map(Code::OutOfRange).code(), "idle_timeout");
        assert_eq!(map(Code::Unavailable).code(), "engine_failure");
        assert_eq!(map(Code::Internal).code(), "engine_failure");
    }

    #[test]
    fn close_reasons_have_distinct_names() {
        let names: std::collections::HashSet<_> = CloseReason::ALL
            .iter()
            .map(|reason| reason.as_str())
            .collect();
        assert_eq!(names.len(), CloseReason::ALL.len());
    }
}
