//! A MongoDB-wire server of the test's own (nx-27017 through scripts/start-mongo-compatible.sh),
//! which a test may stop and start again on the same port to stage a store outage.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct NxServer {
    pub port: u16,
    pid: Option<u32>,
}

impl NxServer {
    pub fn start(port: u16) -> Self {
        let mut server = Self { port, pid: None };
        server.restart();
        server
    }

    pub fn url(&self, database: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server (again) on its port, with an empty database.
    pub fn restart(&mut self) {
        assert!(self.pid.is_none(), "already running");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../scripts/start-mongo-compatible.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg(self.port.to_string())
            // The script's watchdog stops the server if this test process dies first.
            .env("EARSHOT_MONGO_WATCH_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run start-mongo-compatible.sh");
        assert!(
            output.status.success(),
            "nx-27017 did not start (it needs python3 with pip): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let pid = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap();
        self.pid = Some(pid);
    }

    /// Stops the server and waits until its port refuses connections.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid.take() else {
            return;
        };
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "nx-27017 did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for NxServer {
    fn drop(&mut self) {
        self.stop();
    }
}
