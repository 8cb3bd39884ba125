//! `earshot loadgen` at small scale: against `earshot serve` with the real model, and against
//! a gateway in front of the benchmark-only echo engine.

mod common;

use std::process::Command;

use common::{EngineProcess, GatewayProcess, MAX_WER, earshot_bin};
use serde_json::Value;

/// Runs `earshot loadgen` with `args` and returns its JSON report.
fn loadgen(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let output = Command::new(earshot_bin())
        .arg("loadgen")
        .args(args)
        .args(["--quiet", "--out"])
        .arg(&out)
        .output()
        .expect("run earshot loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{stdout}");
    assert!(
        stdout.contains("latency (ms)"),
        "the table is printed: {stdout}"
    );
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[tokio::test]
async fn loadgen_reports_latency_accuracy_and_server_resources_against_serve() {
    let serve = GatewayProcess::serve(&[]).await;
    let jfk = common::fixture("jfk.wav");
    let report = loadgen(&[
        "--url",
        &serve.ws_url(""),
        "--sessions",
        "2",
        "--pace",
        "1.5",
        "--audio",
        jfk.path.to_str().unwrap(),
    ]);
    assert_eq!(report["sessions_connected"], 2, "{report:#}");
    assert_eq!(report["closes_by_code"]["1000"], 2);
    assert_eq!(report["closes_by_reason"]["normal"], 2);
    assert_eq!(report["sessions_with_unexplained_audio_loss"], 0);
    assert!(report["audio_seconds_sent"].as_f64().unwrap() >= 22.0);
    // References come from refs.tsv beside the file.
    let wer = &report["wer"];
    assert_eq!(wer["sessions_scored"], 2);
    assert!(wer["rate"].as_f64().unwrap() < MAX_WER, "{wer}");
    for key in ["result_latency", "first_partial_latency", "final_latency"] {
        let summary = &report[key];
        assert!(summary["count"].as_u64().unwrap() > 0, "{key}: {summary}");
        let p50 = summary["p50_ms"].as_f64().unwrap();
        let p99 = summary["p99_ms"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= p99, "{key}: {summary}");
    }
    assert!(report["partials"].as_u64().unwrap() > 0);
    assert!(report["gateway_latency"]["count"].as_u64().unwrap() > 0);
    // The server was found by its port and sampled.
    let server = &report["server"];
    assert_eq!(server["pid"], serve.child.id());
    assert!(server["rss_mib_max"].as_f64().unwrap() > 50.0, "{server}");
    assert!(server["cpu_percent_mean"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn loadgen_drives_many_sessions_through_a_gateway_on_the_echo_engine() {
    let engine = EngineProcess::start(&["--benchmark-echo"]).await;
    // Every session comes from 127.0.0.1: no per-address cap here.
    let gateway = GatewayProcess::gateway(&[&engine.url], &["--max-sessions-per-ip", "0"]);
    gateway.wait_until_ready().await;
    let report = loadgen(&[
        "--url",
        &gateway.ws_url(""),
        "--sessions",
        "50",
        "--ramp-secs",
        "1",
        "--duration-secs",
        "3",
        "--pace",
        "2",
    ]);
    assert_eq!(report["sessions_connected"], 50, "{report:#}");
    assert_eq!(report["closes_by_code"]["1000"], 50);
    assert!(report["errors"].as_object().unwrap().is_empty());
    assert_eq!(report["sessions_with_unexplained_audio_loss"], 0);
    // The echo engine answers a partial every 300 ms of audio.
    assert!(report["partials"].as_u64().unwrap() >= 50 * 5);
    let gateway_latency = &report["gateway_latency"];
    assert!(gateway_latency["count"].as_u64().unwrap() > 0);
    assert!(gateway_latency["p50_ms"].as_f64().unwrap() >= 0.0);
}
