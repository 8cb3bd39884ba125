//! The gateway's WebSocket control messages: any text frame through the `ClientMessage` parser,
//! `config` messages through validation, and `ping` ids echoed back in a `pong`.
#![no_main]

use earshot_gateway::protocol::{
    AudioEncoding, ClientMessage, ServerMessage, StreamParams, StreamSettings,
};
use libfuzzer_sys::fuzz_target;

#[path = "common_text.rs"]
mod common_text;

fuzz_target!(|text: &str| {
    let Ok(message) = serde_json::from_str::<ClientMessage>(text) else {
        return;
    };
    match message {
        ClientMessage::Config(config) => {
            let params = StreamParams::from(config);
            match StreamSettings::default().apply(&params) {
                Ok(settings) => check_settings(&params, &settings),
                Err(message) => common_text::assert_printable_error(&message),
            }
        }
        ClientMessage::Ping { id } => {
            // The id is echoed: the pong must be valid JSON carrying the same value.
            let pong = ServerMessage::Pong { id: id.clone() }.to_json();
            let value: serde_json::Value = serde_json::from_str(&pong).expect("pong is JSON");
            assert_eq!(value["type"], "pong");
            assert!(
                same_json(&value["id"], &id),
                "sent {id}, echoed {}",
                value["id"]
            );
        }
        ClientMessage::Finalize | ClientMessage::Close | ClientMessage::Keepalive => {}
    }
});

fn check_settings(params: &StreamParams, settings: &StreamSettings) {
    assert!((8_000..=48_000).contains(&settings.sample_rate));
    if let Some(rate) = params.sample_rate {
        assert_eq!(settings.sample_rate, rate);
    }
    if let Some(encoding) = &params.encoding {
        assert_eq!(settings.encoding.as_str(), encoding);
    }
    assert!(matches!(
        settings.encoding,
        AudioEncoding::PcmS16le | AudioEncoding::PcmF32le
    ));
    common_text::assert_settings_in_range(settings);
    let bytes_per_ms = settings.bytes_per_ms();
    assert!(bytes_per_ms.is_finite() && bytes_per_ms >= 16.0 && bytes_per_ms <= 192.0);
}

/// Equal JSON, except that floats may come back a few units in the last place away. serde_json's
/// default float parser (the gateway's) is fast rather than exact: `4444444444440444444444` (past
/// 64 bits, so read as a float) is echoed as `4.4444444444404445e21`, which reads back one ULP off,
/// and `4.4444444444444444e-7` is echoed as `4.4444444444444454e-7`, two ULPs off. Strings and
/// integers of up to 64 bits, which clients use as ids, come back exactly.
fn same_json(left: &serde_json::Value, right: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (left, right) {
        (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
            match (a.as_f64(), b.as_f64()) {
                // Relative, and absolute among the subnormals, where the parser is least exact.
                (Some(a), Some(b)) => {
                    let difference = (a - b).abs();
                    difference <= 1e-14 * a.abs().max(b.abs()) || difference < 1e-300
                }
                _ => false,
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, a)| b.get(key).is_some_and(|b| same_json(a, b)))
        }
        _ => left == right,
    }
}
