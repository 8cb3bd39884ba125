//! Engine settings, validated once at start-up.

use std::time::Duration;

/// How the engine recognizes streams and schedules the model.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// New audio between partial results.
    pub chunk: Duration,
    /// Trailing silence that ends an utterance.
    pub endpoint_silence: Duration,
    /// An utterance longer than this is cut at its quietest recent point.
    pub max_utterance: Duration,
    /// Most windows decoded in one model call.
    pub max_batch: usize,
    /// Longest a ready window waits for others to fill a batch.
    pub max_wait: Duration,
    /// Concurrent streams; one more is refused with RESOURCE_EXHAUSTED.
    pub max_sessions: usize,
    /// On shutdown, how long streams get to receive their last finals.
    pub shutdown_deadline: Duration,
    /// A stream that sends nothing for this long is flushed and closed, so that abandoned
    /// streams do not hold sessions forever.
    pub idle_timeout: Duration,
    /// A stream whose first request has not arrived this long after it opened is ended with
    /// DEADLINE_EXCEEDED: opening streams and saying nothing must not hold sessions.
    pub first_message_timeout: Duration,
    /// A stream whose client takes none of its responses for this long (its response buffer
    /// stays full) is ended, so that a client that stops reading does not hold a session.
    pub write_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            chunk: Duration::from_millis(300),
            endpoint_silence: Duration::from_millis(500),
            max_utterance: Duration::from_secs(15),
            max_batch: 4,
            max_wait: Duration::from_millis(50),
            max_sessions: 64,
            shutdown_deadline: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            first_message_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

pub const CHUNK_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_millis(1000);
pub const ENDPOINT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_millis(5000);
pub const MAX_UTTERANCE_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(2)..=Duration::from_secs(28);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("chunk of {0:?} is outside the allowed 100 ms to 1000 ms")]
    Chunk(Duration),
    #[error("endpoint silence of {0:?} is outside the allowed 100 ms to 5000 ms")]
    Endpoint(Duration),
    #[error(
        "max utterance of {0:?} is outside the allowed 2 s to 28 s (Whisper sees at most 30 s)"
    )]
    MaxUtterance(Duration),
    #[error("max batch must be at least 1")]
    MaxBatch,
    #[error("max sessions must be at least 1")]
    MaxSessions,
    #[error("max wait of {0:?} is longer than 1 s")]
    MaxWait(Duration),
    #[error("idle timeout must be at least 1 s")]
    IdleTimeout,
    #[error("first message timeout must be at least 1 s")]
    FirstMessageTimeout,
    #[error("write timeout must be at least 1 s")]
    WriteTimeout,
}

impl EngineConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !CHUNK_RANGE.contains(&self.chunk) {
            return Err(ConfigError::Chunk(self.chunk));
        }
        if !ENDPOINT_RANGE.contains(&self.endpoint_silence) {
            return Err(ConfigError::Endpoint(self.endpoint_silence));
        }
        if !MAX_UTTERANCE_RANGE.contains(&self.max_utterance) {
            return Err(ConfigError::MaxUtterance(self.max_utterance));
        }
        if self.max_batch == 0 {
            return Err(ConfigError::MaxBatch);
        }
        if self.max_sessions == 0 {
            return Err(ConfigError::MaxSessions);
        }
        if self.max_wait > Duration::from_secs(1) {
            return Err(ConfigError::MaxWait(self.max_wait));
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return Err(ConfigError::IdleTimeout);
        }
        if self.first_message_timeout < Duration::from_secs(1) {
            return Err(ConfigError::FirstMessageTimeout);
        }
        if self.write_timeout < Duration::from_secs(1) {
            return Err(ConfigError::WriteTimeout);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_documented_values() {
        let config = EngineConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.chunk, Duration::from_millis(300));
        assert_eq!(config.max_batch, 4);
        assert_eq!(config.max_wait, Duration::from_millis(50));
        assert_eq!(config.first_message_timeout, Duration::from_secs(10));
        assert_eq!(config.write_timeout, Duration::from_secs(10));
    }

    #[test]
    fn rejects_out_of_range_values() {
        let bad_chunk = EngineConfig {
            chunk: Duration::from_millis(50),
            ..Default::default()
        };
        assert!(matches!(bad_chunk.validate(), Err(ConfigError::Chunk(_))));
        let bad_batch = EngineConfig {
            max_batch: 0,
            ..Default::default()
        };
        assert_eq!(bad_batch.validate(), Err(ConfigError::MaxBatch));
        let bad_utterance = EngineConfig {
            max_utterance: Duration::from_secs(40),
            ..Default::default()
        };
        assert!(matches!(
            bad_utterance.validate(),
            Err(ConfigError::MaxUtterance(_))
        ));
        let no_first_message_wait = EngineConfig {
            first_message_timeout: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(
            no_first_message_wait.validate(),
            Err(ConfigError::FirstMessageTimeout)
        );
        let no_write_wait = EngineConfig {
            write_timeout: Duration::from_millis(10),
            ..Default::default()
        };
        assert_eq!(no_write_wait.validate(), Err(ConfigError::WriteTimeout));
    }
}
