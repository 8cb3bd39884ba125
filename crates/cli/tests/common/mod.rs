//! Test harness: runs the real `earshot` binary with the real model on loopback.
#![allow(dead_code)]

pub mod nx;
pub mod prometheus;
pub mod ws;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use earshot_loadgen::corpus::{self, Recording};
use serde_json::Value;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The word error rate streamed speech must stay under (Whisper tiny.en streams 5–8 % here).
pub const MAX_WER: f64 = 0.12;

pub fn earshot_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_earshot"))
}

/// The installed model; the test command installs it first (`earshot model fetch`).
pub fn model_dir() -> PathBuf {
    let dir = earshot_model::default_model_dir();
    assert!(
        dir.join("model.safetensors").is_file(),
        "no model in {}: run `earshot model fetch` (the README's test command does this)",
        dir.display()
    );
    dir
}

/// Starts `command` (logs to our stderr) and returns it with the first line it prints, which
/// names the address it listens on.
fn spawn_reading_first_line(mut command: Command) -> (Child, String) {
    let mut child = command
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn earshot");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).expect("read the address line");
    // Keep draining: a child writing to a closed pipe would fail (Rust ignores SIGPIPE, so
    // `println!` panics on EPIPE).
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    (child, line)
}

/// An `earshot engine` child process, killed on drop.
pub struct EngineProcess {
    pub child: Child,
    pub url: String,
}

impl EngineProcess {
    pub async fn start(extra_args: &[&str]) -> Self {
        let mut command = Command::new(earshot_bin());
        command
            .args(["engine", "--listen", "127.0.0.1:0", "--model"])
            .arg(model_dir())
            .args(extra_args);
        let (child, line) = spawn_reading_first_line(command);
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(
            line.contains("listening on"),
            "unexpected first line from the engine: {line:?}"
        );
        let engine = Self {
            child,
            url: format!("http://{addr}"),
        };
        engine.wait_until_serving().await;
        engine
    }

    pub async fn channel(&self) -> Channel {
        earshot_engine::client::connect(&self.url)
            .await
            .expect("connect to the engine")
    }

    async fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(channel) = earshot_engine::client::connect(&self.url).await {
                let mut health = HealthClient::new(channel);
                let request = HealthCheckRequest {
                    service: earshot_engine::SERVICE_NAME.into(),
                };
                if let Ok(response) = health.check(request).await
                    && response.into_inner().status == ServingStatus::Serving as i32
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "engine never reported SERVING");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn terminate(&self) {
        terminate(&self.child);
    }

    /// Waits for the process to exit; returns its exit status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        wait_exit(&mut self.child, limit)
    }
}

/// Sends SIGTERM to `child`.
fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits for `child` to exit; returns its exit status and how long it took.
fn wait_exit(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "the process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn fixtures() -> Vec<Recording> {
    corpus::load(&corpus::fixtures_dir()).expect("bundled fixtures")
}

pub fn fixture(name: &str) -> Recording {
    fixtures()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

pub fn read_samples(recording: &Recording) -> (Vec<f32>, u32) {
    let audio = earshot_audio::wav::read_wav(&recording.path).expect("read wav");
    (audio.samples, audio.sample_rate)
}

/// An `earshot serve` (gateway + engine) or `earshot gateway` child process, killed on drop.
pub struct GatewayProcess {
    pub child: Child,
    /// `host:port` of the gateway.
    pub addr: String,
}

impl GatewayProcess {
    /// `earshot serve` with an in-memory store unless `extra_args` names one; ready when it returns.
    pub async fn serve(extra_args: &[&str]) -> Self {
        let mut command = Command::new(earshot_bin());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--model"])
            .arg(model_dir())
            .args(extra_args);
        let gateway = Self::spawn(command, extra_args);
        gateway.wait_until_ready().await;
        gateway
    }

    /// `earshot gateway` in front of `engines`, with an in-memory store unless `extra_args`
    /// names one. Not waited on: with no live engine it never becomes ready.
    pub fn gateway(engines: &[&str], extra_args: &[&str]) -> Self {
        let mut command = Command::new(earshot_bin());
        command.args(["gateway", "--listen", "127.0.0.1:0"]);
        for engine in engines {
            command.args(["--engine", engine]);
        }
        command.args(extra_args);
        Self::spawn(command, extra_args)
    }

    /// Starts `command`, with an in-memory store unless `extra_args` names one.
    fn spawn(mut command: Command, extra_args: &[&str]) -> Self {
        if !extra_args.contains(&"--store") {
            command.args(["--store", "sqlite::memory:"]);
        }
        let (child, line) = spawn_reading_first_line(command);
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected first line from the gateway: {line:?}"))
            .to_string();
        Self { child, addr }
    }

    pub async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while http_get(&self.addr, "/readyz").await.0 != 200 {
            assert!(Instant::now() < deadline, "gateway never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn terminate(&self) {
        terminate(&self.child);
    }

    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        wait_exit(&mut self.child, limit)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/v1/stt{query}", self.addr)
    }

    /// The body of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let (status, response) = http_get(&self.addr, "/metrics").await;
        assert_eq!(status, 200, "{response}");
        response
    }

    /// Polls `GET /v1/sessions/{id}` until the session is stored and no longer active.
    pub async fn stored_session(&self, session_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, response) =
                http_get(&self.addr, &format!("/v1/sessions/{session_id}")).await;
            if status == 200 {
                let value: Value = serde_json::from_str(body(&response)).unwrap_or(Value::Null);
                if value.is_object() && value["session"]["status"] != "active" {
                    return value;
                }
            }
            assert!(Instant::now() < deadline, "{status} {response}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the first sample in Prometheus text `metrics` whose line starts with `name`
/// (a metric name with its labels).
pub fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// A port that was free a moment ago, for servers that must be told their port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port")
        .port()
}

/// The body of an HTTP response read by [`http_get`].
pub fn body(response: &str) -> &str {
    response.split("\r\n\r\n").nth(1).unwrap_or_default().trim()
}

/// A bare HTTP/1.0 GET (so the body is never chunked): (status, headers and body as text).
/// Status 0 if unreachable.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A WebSocket upgrade request by hand, to see the HTTP answer: (status, headers and body).
pub async fn http_get_upgrade(addr: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/stt HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buffer[..n]).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}
