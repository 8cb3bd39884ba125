//! Shared pieces of the backend tests: store fixtures, the behavioural suite and the MongoDB test server.

pub mod behaviour;
pub mod mongo_server;

use std::sync::Arc;

use earshot_store::{TranscriptStore, open_store};

/// Where one test's store lives. Opening it twice reaches the same data, which the reopening test relies on.
pub struct Fixture {
    pub url: String,
    pub backend: &'static str,
    // Kept alive so the SQLite file outlives the test's stores.
    _directory: Option<tempfile::TempDir>,
}

impl Fixture {
    /// A SQLite file a few directories deep in a fresh temporary directory, so opening it also creates parents.
    pub fn sqlite() -> Self {
        let directory = tempfile::tempdir().expect("create a temporary directory");
        let path = directory.path().join("nested/deeper/transcripts.db");
        Self {
            url: format!("sqlite://{}", path.display()),
            backend: "sqlite",
            _directory: Some(directory),
        }
    }

    /// A database of its own on the shared MongoDB-wire test server.
    pub fn mongodb() -> Self {
        let database = format!("earshot_test_{}", uuid::Uuid::new_v4().simple());
        Self {
            url: mongo_server::url_with_database(&mongo_server::base_url(), &database),
            backend: "mongodb",
            _directory: None,
        }
    }

    pub async fn open(&self) -> Arc<dyn TranscriptStore> {
        match open_store(&self.url).await {
            Ok(store) => store,
            Err(error) => panic!("cannot open {}: {error}", self.url),
        }
    }
}

/// Defines one `#[tokio::test]` per behaviour in [`behaviour`], each with a fresh fixture from `$fixture`.
macro_rules! behaviour_suite {
    ($fixture:expr) => {
        behaviour_suite!(@cases $fixture;
            round_trips_a_session_with_segments_and_words,
            returns_segments_ordered_by_index,
            keeps_one_segment_when_the_same_index_is_appended_twice,
            creating_an_existing_session_again_changes_nothing,
            lists_sessions_newest_first_with_limit_and_before_ms,
            get_of_an_unknown_id_is_none,
            stores_status_and_close_reason,
            finishing_an_unknown_session_is_session_not_found,
            keeps_a_segment_appended_before_its_session,
            stores_non_finite_confidence_as_zero,
            data_survives_reopening_the_store,
            ping_succeeds,
            stores_api_keys_by_name_and_finds_them_by_hash,
            a_key_name_is_taken_once,
            records_the_latest_use_of_a_key,
            a_revoked_key_is_gone,
        );
    };
    (@cases $fixture:expr; $($case:ident,)+) => {
        $(
            #[tokio::test]
            async fn $case() {
                let fixture = $fixture;
                $crate::support::behaviour::$case(&fixture).await;
            }
        )+
    };
}
