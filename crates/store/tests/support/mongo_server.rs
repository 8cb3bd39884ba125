//! The MongoDB-wire server the MongoDB tests run against: `EARSHOT_TEST_MONGODB_URL` when set, otherwise an
//! nx-27017 started once per test process by `scripts/start-mongo-compatible.sh`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const HOW_TO_START: &str = "the MongoDB tests need a MongoDB-wire server: either install python3 (3.10+) with \
pip so the tests can start nx-27017 themselves through scripts/start-mongo-compatible.sh, or start one \
yourself (`scripts/start-mongo-compatible.sh 27017`, or a real mongod) and run the tests with \
EARSHOT_TEST_MONGODB_URL=mongodb://127.0.0.1:27017";

static BASE_URL: OnceLock<Result<String, String>> = OnceLock::new();

/// The server's URL without a database; panics, failing the test, with [`HOW_TO_START`] when there is none.
pub fn base_url() -> String {
    match BASE_URL.get_or_init(find_or_start_server) {
        Ok(url) => url.clone(),
        Err(message) => panic!("{message}"),
    }
}

fn find_or_start_server() -> Result<String, String> {
    if let Ok(url) = std::env::var("EARSHOT_TEST_MONGODB_URL")
        && !url.trim().is_empty()
    {
        return Ok(url.trim().to_owned());
    }
    let port = free_port().map_err(|error| format!("{HOW_TO_START}\n\nno free port: {error}"))?;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/start-mongo-compatible.sh");
    // The watchdog in the script stops the server once this test process exits, as nothing in the test
    // harness runs after the last test.
    let output = Command::new("bash")
        .arg(&script)
        .arg(port.to_string())
        .env("EARSHOT_MONGO_WATCH_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("{HOW_TO_START}\n\ncannot run {}: {error}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{HOW_TO_START}\n\n{} failed ({}):\n{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(format!("mongodb://127.0.0.1:{port}"))
}

fn free_port() -> std::io::Result<u16> {
    // Closing the listener frees the port for the server; another process taking it in between makes the
    // script fail loudly rather than connect the tests to the wrong server.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `base` with its path replaced by `/database`, keeping hosts, credentials and query options.
pub fn url_with_database(base: &str, database: &str) -> String {
    let (scheme, rest) = base.split_once("://").unwrap_or(("mongodb", base));
    let (before_query, query) = match rest.split_once('?') {
        Some((before_query, query)) => (before_query, Some(query)),
        None => (rest, None),
    };
    let hosts = before_query
        .split_once('/')
        .map_or(before_query, |(hosts, _)| hosts);
    match query {
        Some(query) => format!("{scheme}://{hosts}/{database}?{query}"),
        None => format!("{scheme}://{hosts}/{database}"),
    }
}
