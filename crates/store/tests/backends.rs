//! Both backends against the one behavioural suite: SQLite on real files, MongoDB on a real MongoDB-wire
//! server (nx-27017 unless `EARSHOT_TEST_MONGODB_URL` names another), plus checks particular to each.

#[macro_use]
mod support;

mod sqlite {
    use earshot_store::{SqliteStore, StoreError, open_store};

    use crate::support::Fixture;

    behaviour_suite!(Fixture::sqlite());

    #[tokio::test]
    async fn creates_the_database_file_with_its_parent_directories() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("a/b/c/transcripts.db");
        let store = open_store(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        store.ping().await.unwrap();
        assert!(path.is_file());
    }

    #[tokio::test]
    async fn reports_a_directory_that_cannot_be_created() {
        let directory = tempfile::tempdir().unwrap();
        let blocker = directory.path().join("blocker");
        std::fs::write(&blocker, b"a file where a directory should be").unwrap();
        let error = SqliteStore::open(blocker.join("sub/transcripts.db"))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(error, StoreError::CreateDirectory { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("blocker"), "{error}");
    }

    #[tokio::test]
    async fn memory_stores_are_private_to_each_open() {
        let first = open_store("sqlite::memory:").await.unwrap();
        let second = open_store("sqlite::memory:").await.unwrap();
        let session = earshot_store::SessionRecord {
            id: "only-in-first".to_owned(),
            started_at_ms: 1,
            ended_at_ms: None,
            client_addr: "127.0.0.1:1".to_owned(),
            audio_ms: 0,
            close_reason: None,
            status: earshot_store::SessionStatus::Active,
        };
        first.create_session(&session).await.unwrap();
        assert!(first.get_session("only-in-first").await.unwrap().is_some());
        assert!(second.get_session("only-in-first").await.unwrap().is_none());
    }
}

mod mongodb {
    use std::time::{Duration, Instant};

    use earshot_store::{MongoStore, StoreError, open_store};

    use crate::support::Fixture;
    use crate::support::mongo_server::{base_url, url_with_database};

    behaviour_suite!(Fixture::mongodb());

    #[tokio::test]
    async fn uses_the_database_named_in_the_url_path() {
        let base = base_url();
        let database = format!("earshot_test_named_{}", uuid::Uuid::new_v4().simple());
        let store = MongoStore::connect(&url_with_database(&base, &database))
            .await
            .unwrap();
        assert_eq!(store.database_name(), database);
    }

    #[tokio::test]
    async fn databases_named_by_different_urls_are_separate() {
        let first = Fixture::mongodb().open().await;
        let second = Fixture::mongodb().open().await;
        let session = earshot_store::SessionRecord {
            id: "only-in-first".to_owned(),
            started_at_ms: 1,
            ended_at_ms: None,
            client_addr: "127.0.0.1:1".to_owned(),
            audio_ms: 0,
            close_reason: None,
            status: earshot_store::SessionStatus::Active,
        };
        first.create_session(&session).await.unwrap();
        assert!(first.get_session("only-in-first").await.unwrap().is_some());
        assert!(second.get_session("only-in-first").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn open_fails_promptly_when_no_server_answers() {
        // Port 1 on loopback refuses connections; the URL's own server selection timeout applies.
        let started = Instant::now();
        let error = open_store("mongodb://127.0.0.1:1/earshot?serverSelectionTimeoutMS=300")
            .await
            .err()
            .expect("no server listens on port 1");
        assert!(matches!(error, StoreError::Mongo(_)), "{error}");
        assert!(error.is_retryable());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn url_with_database_keeps_hosts_credentials_and_options() {
        assert_eq!(
            url_with_database("mongodb://127.0.0.1:27017", "t1"),
            "mongodb://127.0.0.1:27017/t1"
        );
        assert_eq!(
            url_with_database("mongodb://u:p@h1:1,h2:2/old?replicaSet=rs&w=1", "t2"),
            "mongodb://u:p@h1:1,h2:2/t2?replicaSet=rs&w=1"
        );
        assert_eq!(
            url_with_database("mongodb://h/?tls=true", "t3"),
            "mongodb://h/t3?tls=true"
        );
    }
}
