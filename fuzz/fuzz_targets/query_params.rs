//! The gateway's WebSocket query string (`/v1/listen?sample_rate=...`): parsing, then validation.
#![no_main]

use earshot_gateway::protocol::{AudioEncoding, StreamParams, StreamSettings};
use libfuzzer_sys::fuzz_target;

#[path = "common_text.rs"]
mod common_text;

fuzz_target!(|query: &str| {
    let params = match StreamParams::from_query(query) {
        Ok(params) => params,
        Err(message) => {
            common_text::assert_printable_error(&message);
            return;
        }
    };
    match StreamSettings::default().apply(&params) {
        Ok(settings) => {
            assert!((8_000..=48_000).contains(&settings.sample_rate));
            assert_eq!(settings.sample_rate, params.sample_rate.unwrap_or(16_000));
            let expected_encoding = match params.encoding.as_deref() {
                None | Some("pcm_s16le") => AudioEncoding::PcmS16le,
                Some("pcm_f32le") => AudioEncoding::PcmF32le,
                Some(other) => panic!("encoding {other:?} was accepted"),
            };
            assert_eq!(settings.encoding, expected_encoding);
            assert_eq!(
                settings.interim_results,
                params.interim_results.unwrap_or(true)
            );
            assert_eq!(settings.endpointing_ms, params.endpointing_ms);
            assert_eq!(settings.chunk_ms, params.chunk_ms);
            common_text::assert_settings_in_range(&settings);
            assert!(settings.bytes_per_ms().is_finite());
        }
        Err(message) => common_text::assert_printable_error(&message),
    }
});
