// Shared by the gateway targets: what may be said about a message that goes back to a client,
// and about the settings a session may be given.

use earshot_gateway::protocol::{CHUNK_MS_RANGE, ENDPOINTING_MS_RANGE, StreamSettings};

/// Errors go back to the client in an `error` frame and into the gateway's logs: short and on one line.
pub fn assert_printable_error(message: &str) {
    assert!(message.len() < 512, "{} bytes: {message:?}", message.len());
    assert!(
        !message.chars().any(|c| c.is_control()),
        "a control character in {message:?}"
    );
}

/// Accepted settings stay inside the ranges the protocol allows.
pub fn assert_settings_in_range(settings: &StreamSettings) {
    assert_eq!(settings.language, "en");
    assert!(
        settings
            .endpointing_ms
            .is_none_or(|ms| ENDPOINTING_MS_RANGE.contains(&ms)),
        "{settings:?}"
    );
    assert!(
        settings
            .chunk_ms
            .is_none_or(|ms| CHUNK_MS_RANGE.contains(&ms)),
        "{settings:?}"
    );
}
