//! WebSocket protocol v1 messages (docs/websocket.md): client control messages in, server
//! messages out. Binary frames are audio and never pass through here.

use serde::{Deserialize, Serialize};

/// Stream parameters, from the query string or a `config` message. Unknown query keys are
/// ignored (proxies and future versions add their own).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct StreamParams {
    pub sample_rate: Option<u32>,
    pub encoding: Option<String>,
    pub language: Option<String>,
    pub interim_results: Option<bool>,
    pub endpointing_ms: Option<u32>,
    pub chunk_ms: Option<u32>,
}

impl StreamParams {
    /// Parses a query string (`sample_rate=16000&...`). Unknown keys are ignored; a known key
    /// whose value does not parse is an error naming it (reported as `invalid_parameter`).
    pub fn from_query(query: &str) -> Result<Self, String> {
        let mut params = Self::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "sample_rate" => params.sample_rate = Some(parse_number(&key, &value)?),
                "encoding" => params.encoding = Some(value.into_owned()),
                "language" => params.language = Some(value.into_owned()),
                "interim_results" => params.interim_results = Some(parse_bool(&key, &value)?),
                "endpointing_ms" => params.endpointing_ms = Some(parse_number(&key, &value)?),
                "chunk_ms" => params.chunk_ms = Some(parse_number(&key, &value)?),
                _ => {}
            }
        }
        Ok(params)
    }
}

/// The `endpointing_ms` a client may ask for (the engine's `endpoint_ms` range).
pub const ENDPOINTING_MS_RANGE: std::ops::RangeInclusive<u32> = 100..=5_000;
/// The `chunk_ms` a client may ask for (the engine's `chunk_ms` range).
pub const CHUNK_MS_RANGE: std::ops::RangeInclusive<u32> = 100..=1_000;

/// At most this much of a client's value is echoed back in an error.
const ECHOED_VALUE_CHARS: usize = 32;

fn echoed(value: &str) -> String {
    let mut shown: String = value.chars().take(ECHOED_VALUE_CHARS).collect();
    if shown.len() < value.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

fn parse_number(key: &str, value: &str) -> Result<u32, String> {
    value.parse().map_err(|_| {
        format!(
            "{key} {} is not a whole number in the allowed range",
            echoed(value)
        )
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{key} {} must be true or false", echoed(other))),
    }
}

/// The validated form of [`StreamParams`].
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    pub sample_rate: u32,
    pub encoding: AudioEncoding,
    pub language: String,
    pub interim_results: bool,
    pub endpointing_ms: Option<u32>,
    pub chunk_ms: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioEncoding {
    PcmS16le,
    PcmF32le,
}

impl AudioEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PcmS16le => "pcm_s16le",
            Self::PcmF32le => "pcm_f32le",
        }
    }

    /// The engine's name for it (proto `AudioConfig.encoding`).
    pub fn engine_name(self) -> &'static str {
        match self {
            Self::PcmS16le => "PCM_INT16",
            Self::PcmF32le => "FLOAT32",
        }
    }

    pub fn bytes_per_sample(self) -> usize {
        match self {
            Self::PcmS16le => 2,
            Self::PcmF32le => 4,
        }
    }
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            encoding: AudioEncoding::PcmS16le,
            language: "en".into(),
            interim_results: true,
            endpointing_ms: None,
            chunk_ms: None,
        }
    }
}

impl StreamSettings {
    /// Applies `params` over `self`, validating every value given.
    pub fn apply(&self, params: &StreamParams) -> Result<Self, String> {
        let mut settings = self.clone();
        if let Some(rate) = params.sample_rate {
            if !(8_000..=48_000).contains(&rate) {
                return Err(format!(
                    "sample_rate {rate} is not supported: use 8000 to 48000 Hz"
                ));
            }
            settings.sample_rate = rate;
        }
        if let Some(encoding) = &params.encoding {
            settings.encoding = match encoding.as_str() {
                "pcm_s16le" => AudioEncoding::PcmS16le,
                "pcm_f32le" => AudioEncoding::PcmF32le,
                other => {
                    return Err(format!(
                        "encoding {} is not supported: use \"pcm_s16le\" or \"pcm_f32le\"",
                        echoed(other)
                    ));
                }
            };
        }
        if let Some(language) = &params.language {
            if language != "en" {
                return Err(format!(
                    "language {} is not supported: the model is English-only (\"en\")",
                    echoed(language)
                ));
            }
            settings.language = language.clone();
        }
        if let Some(interim) = params.interim_results {
            settings.interim_results = interim;
        }
        if let Some(endpointing) = params.endpointing_ms {
            if !ENDPOINTING_MS_RANGE.contains(&endpointing) {
                return Err(format!(
                    "endpointing_ms {endpointing} is outside the allowed {} to {}",
                    ENDPOINTING_MS_RANGE.start(),
                    ENDPOINTING_MS_RANGE.end()
                ));
            }
            settings.endpointing_ms = Some(endpointing);
        }
        if let Some(chunk) = params.chunk_ms {
            if !CHUNK_MS_RANGE.contains(&chunk) {
                return Err(format!(
                    "chunk_ms {chunk} is outside the allowed {} to {}",
                    CHUNK_MS_RANGE.start(),
                    CHUNK_MS_RANGE.end()
                ));
            }
            settings.chunk_ms = Some(chunk);
        }
        Ok(settings)
    }

    /// Bytes of audio per millisecond at these settings.
    pub fn bytes_per_ms(&self) -> f64 {
        f64::from(self.sample_rate) * self.encoding.bytes_per_sample() as f64 / 1000.0
    }
}

/// Client text frames.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Config(ConfigMessage),
    Finalize,
    Close,
    Keepalive,
    Ping { id: serde_json::Value },
}

/// `{"type":"config", ...}`: the query keys, as JSON values.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigMessage {
    pub sample_rate: Option<u32>,
    pub encoding: Option<String>,
    pub language: Option<String>,
    pub interim_results: Option<bool>,
    pub endpointing_ms: Option<u32>,
    pub chunk_ms: Option<u32>,
}

impl From<ConfigMessage> for StreamParams {
    fn from(config: ConfigMessage) -> Self {
        Self {
            sample_rate: config.sample_rate,
            encoding: config.encoding,
            language: config.language,
            interim_results: config.interim_results,
            endpointing_ms: config.endpointing_ms,
            chunk_ms: config.chunk_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Word {
    pub word: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub confidence: f32,
}

/// Server text frames.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Session {
        session_id: String,
        sample_rate: u32,
        encoding: &'static str,
    },
    Result {
        text: String,
        is_final: bool,
        confidence: f32,
        #[serde(skip_serializing_if = "Option::is_none")]
        stability: Option<f32>,
        start_ms: i64,
        end_ms: i64,
        segment: i32,
        #[serde(skip_serializing_if = "Option::is_none")]
        words: Option<Vec<Word>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        from_finalize: bool,
    },
    SpeechStarted {
        at_ms: i64,
    },
    SpeechEnded {
        at_ms: i64,
    },
    SlowDown {
        buffered_ms: u64,
    },
    Resume,
    Pong {
        id: serde_json::Value,
    },
    Error {
        code: &'static str,
        message: String,
    },
    Closed {
        reason: &'static str,
        audio_ms: u64,
        segments: u64,
    },
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|err| {
            format!(
                r#"{{"type":"error","code":"internal","message":"cannot encode a message: {err}"}}"#
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_control_message() {
        let parse = |s: &str| serde_json::from_str::<ClientMessage>(s);
        assert_eq!(
            parse(r#"{"type":"finalize"}"#).unwrap(),
            ClientMessage::Finalize
        );
        assert_eq!(parse(r#"{"type":"close"}"#).unwrap(), ClientMessage::Close);
        assert_eq!(
            parse(r#"{"type":"keepalive"}"#).unwrap(),
            ClientMessage::Keepalive
        );
        assert_eq!(
            parse(r#"{"type":"ping","id":7}"#).unwrap(),
            ClientMessage::Ping { id: 7.into() }
        );
        let ClientMessage::Config(config) =
            parse(r#"{"type":"config","sample_rate":48000,"encoding":"pcm_f32le"}"#).unwrap()
        else {
            panic!("config expected");
        };
        assert_eq!(config.sample_rate, Some(48_000));
    }

    #[test]
    fn rejects_unknown_messages_and_fields() {
        let parse = |s: &str| serde_json::from_str::<ClientMessage>(s);
        assert!(parse(r#"{"type":"dance"}"#).is_err());
        assert!(parse(r#"{"type":"config","colour":"red"}"#).is_err());
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"type":"ping"}"#).is_err());
    }

    #[test]
    fn validates_stream_parameters() {
        let defaults = StreamSettings::default();
        let params = |rate| StreamParams {
            sample_rate: Some(rate),
            ..Default::default()
        };
        assert!(defaults.apply(&params(7_999)).unwrap_err().contains("7999"));
        assert_eq!(defaults.apply(&params(44_100)).unwrap().sample_rate, 44_100);
        let bad_encoding = StreamParams {
            encoding: Some("mp3".into()),
            ..Default::default()
        };
        assert!(defaults.apply(&bad_encoding).unwrap_err().contains("mp3"));
        let bad_chunk = StreamParams {
            chunk_ms: Some(20),
            ..Default::default()
        };
        assert!(defaults.apply(&bad_chunk).is_err());
    }

    #[test]
    fn query_values_that_do_not_parse_are_named() {
        let err = StreamParams::from_query("sample_rate=99999999999").unwrap_err();
        assert!(
            err.contains("sample_rate") && err.contains("99999999999"),
            "{err}"
        );
        let err = StreamParams::from_query("interim_results=maybe").unwrap_err();
        assert!(
            err.contains("interim_results") && err.contains("maybe"),
            "{err}"
        );
        let params = StreamParams::from_query(
            "sample_rate=48000&encoding=pcm_f32le&interim_results=false&chunk_ms=200&utm=x",
        )
        .unwrap();
        assert_eq!(params.sample_rate, Some(48_000));
        assert_eq!(params.encoding.as_deref(), Some("pcm_f32le"));
        assert_eq!(params.interim_results, Some(false));
        assert_eq!(params.chunk_ms, Some(200));
        assert_eq!(
            StreamParams::from_query("").unwrap(),
            StreamParams::default()
        );
    }

    #[test]
    fn echoed_values_are_bounded_and_escaped() {
        let long = "x".repeat(10_000);
        let err = StreamSettings::default()
            .apply(&StreamParams {
                encoding: Some(format!("{long}\n")),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.len() < 200, "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn results_keep_the_seed_fields_top_level() {
        let json = ServerMessage::Result {
            text: "hello".into(),
            is_final: false,
            confidence: 0.5,
            stability: Some(0.8),
            start_ms: 0,
            end_ms: 300,
            segment: 0,
            words: None,
            from_finalize: false,
        }
        .to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["type"], "result");
        assert_eq!(value["text"], "hello");
        assert_eq!(value["is_final"], false);
        assert!(value.get("words").is_none());
        assert!(value.get("from_finalize").is_none());
    }
}
