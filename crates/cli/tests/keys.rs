//! `earshot keys` against a real SQLite store: the key printed once on stdout, only its hash kept.

use std::process::{Command, Output};

use earshot_gateway::auth::hash_key;
use earshot_store::TranscriptStore;

fn earshot(args: &[&str], store: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(args)
        .args(["--store", store])
        .env_remove("EARSHOT_STORE")
        .output()
        .expect("run earshot")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("transcripts.sqlite3");
    let store = format!("sqlite://{}", db.display());

    let created = earshot(
        &["keys", "create", "--name", "laptop", "--max-sessions", "2"],
        &store,
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    let stdout = text(&created.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stdout: {stdout:?}");
    let key = lines[0];
    assert!(key.starts_with("es_") && key.len() > 40, "{key}");
    assert!(
        !text(&created.stderr).contains(key),
        "the key only on stdout"
    );

    let admin = earshot(
        &[
            "keys", "create", "--name", "ops", "--scope", "admin", "--scope", "read",
        ],
        &store,
    );
    assert!(admin.status.success(), "{}", text(&admin.stderr));

    // Only the hash is stored, with the name, scopes and limit.
    let opened = earshot_store::SqliteStore::open(&db).await.unwrap();
    let record = opened.find_key(&hash_key(key)).await.unwrap().unwrap();
    assert_eq!(record.name, "laptop");
    assert_eq!(record.scopes, ["stream", "read"]);
    assert_eq!(record.max_sessions, Some(2));
    drop(opened);
    // Nor the key in any file of the database (the main file, its write-ahead log).
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let raw = std::fs::read(&path).unwrap();
        assert!(
            !raw.windows(key.len())
                .any(|window| window == key.as_bytes()),
            "the key itself is in {}",
            path.display()
        );
    }

    let listed = earshot(&["keys", "list"], &store);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let table = text(&listed.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("laptop  stream,read"), "{table}");
    assert!(table.contains("ops     read,admin"), "{table}");
    assert!(table.contains("never"), "{table}");
    assert!(
        !table.contains(key) && !table.contains(&hash_key(key)),
        "{table}"
    );

    let again = earshot(&["keys", "create", "--name", "laptop"], &store);
    assert!(!again.status.success());
    assert!(text(&again.stdout).is_empty());
    assert!(
        text(&again.stderr).contains("exists already"),
        "{}",
        text(&again.stderr)
    );

    let revoked = earshot(&["keys", "revoke", "laptop"], &store);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let gone = earshot(&["keys", "revoke", "laptop"], &store);
    assert!(!gone.status.success());
    assert!(
        text(&gone.stderr).contains("no key named"),
        "{}",
        text(&gone.stderr)
    );
    let opened = earshot_store::SqliteStore::open(&db).await.unwrap();
    assert!(opened.find_key(&hash_key(key)).await.unwrap().is_none());
    let listed = earshot(&["keys", "list"], &store);
    assert!(!text(&listed.stdout).contains("laptop"));
}

#[test]
fn bad_names_and_scopes_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("t.sqlite3").display());
    let scope = earshot(
        &["keys", "create", "--name", "x", "--scope", "root"],
        &store,
    );
    assert!(!scope.status.success());
    assert!(
        text(&scope.stderr).contains("unknown scope"),
        "{}",
        text(&scope.stderr)
    );
    let name = earshot(&["keys", "create", "--name", "two words"], &store);
    assert!(!name.status.success());
    assert!(
        text(&name.stderr).contains("key name"),
        "{}",
        text(&name.stderr)
    );
    assert!(text(&name.stdout).is_empty());
}

#[test]
fn a_store_password_never_reaches_the_error_message() {
    let unreachable = "mongodb://earshot:hunter2@127.0.0.1:1/x?serverSelectionTimeoutMS=200";
    let listed = earshot(&["keys", "list"], unreachable);
    assert!(!listed.status.success());
    let stderr = text(&listed.stderr);
    assert!(
        stderr.contains("cannot open the transcript store mongodb://earshot:***@127.0.0.1:1/x"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
