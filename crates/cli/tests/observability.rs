//! Operating the service: a real Prometheus scraping `earshot serve`, and a transcript store
//! outage that is reported while it lasts and recovered without losing a word.

mod common;

use std::time::Duration;

use common::nx::NxServer;
use common::prometheus::Prometheus;
use common::ws::{connect, final_text, read_session_id, stored_text, stream_and_close};
use common::{GatewayProcess, MAX_WER, fixture, free_port, http_get, metric_value, read_samples};
use earshot_loadgen::wer::word_errors;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn prometheus_scrapes_the_seed_metrics_with_sane_values() {
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let serve = GatewayProcess::serve(&["--metrics-listen", &metrics_addr]).await;
    // Moved off the public port.
    assert_eq!(http_get(&serve.addr, "/metrics").await.0, 404);
    let prometheus = Prometheus::scraping(&[&metrics_addr]).await;

    let recording = fixture("jfk.wav");
    let (samples, _) = read_samples(&recording);
    let mut socket = connect(&serve.ws_url("")).await;
    let (messages, code) = stream_and_close(&mut socket, &samples, true).await;
    assert_eq!(code, Some(CloseCode::Normal));
    let text = final_text(&messages);
    assert!(
        word_errors(&recording.reference, &text).rate() < MAX_WER,
        "{text}"
    );
    let n_frames = samples.len().div_ceil(1600) as f64;

    prometheus
        .wait_for(r#"up{job="earshot"}"#, |up| up == 1.0)
        .await;
    // The seed's metric names, as Prometheus stored them.
    prometheus
        .wait_for("stt_audio_chunks_received_total", |n| n == n_frames)
        .await;
    let latencies = prometheus
        .wait_for("stt_latency_seconds_count", |n| n >= 2.0)
        .await;
    let in_buckets = prometheus
        .wait_for(r#"stt_latency_seconds_bucket{le="+Inf"}"#, |n| n >= 2.0)
        .await;
    assert_eq!(latencies, in_buckets);
    // Results come within seconds of their audio on this machine, never before it.
    let median = prometheus
        .wait_for(
            "histogram_quantile(0.5, stt_latency_seconds_bucket)",
            f64::is_finite,
        )
        .await;
    assert!(median > 0.0 && median < 5.0, "median latency {median} s");
    let p95 = prometheus
        .wait_for(
            "histogram_quantile(0.95, stt_latency_seconds_bucket)",
            f64::is_finite,
        )
        .await;
    println!(
        "result latency through the gateway (from Prometheus): p50 {median:.3} s, p95 {p95:.3} s"
    );
    for bucket in ["0.05", "0.1", "0.2", "0.5", "1.0"] {
        let series = prometheus
            .query(&format!(r#"stt_latency_seconds_bucket{{le="{bucket}"}}"#))
            .await;
        assert_eq!(series.len(), 1, "the seed's bucket {bucket}");
    }
    prometheus
        .wait_for(r#"stt_sessions_closed_total{reason="normal"}"#, |n| {
            n == 1.0
        })
        .await;
    prometheus
        .wait_for("stt_websocket_connections_active", |n| n == 0.0)
        .await;
    prometheus
        .wait_for("stt_first_partial_seconds_count", |n| n >= 1.0)
        .await;
    prometheus
        .wait_for("stt_final_latency_seconds_count", |n| n >= 1.0)
        .await;
    // The in-process engine's metrics are on the same endpoint.
    let batches = prometheus
        .wait_for("stt_engine_batches_total", |n| n >= 2.0)
        .await;
    let batch_sizes = prometheus
        .wait_for("stt_engine_batch_size_count", |n| n >= 2.0)
        .await;
    assert_eq!(batches, batch_sizes);
    prometheus
        .wait_for("stt_engine_inference_seconds_sum", |s| s > 0.0 && s < 60.0)
        .await;
    prometheus
        .wait_for(r#"stt_engine_windows_total{kind="final"}"#, |n| n >= 1.0)
        .await;
    prometheus.wait_for("stt_store_up", |up| up == 1.0).await;
    prometheus
        .wait_for("stt_engines_serving", |n| n == 1.0)
        .await;
}

#[tokio::test]
async fn a_store_outage_is_reported_while_it_lasts_and_no_transcript_is_lost() {
    let mut mongo = NxServer::start(free_port());
    let store_url = format!(
        "{}?serverSelectionTimeoutMS=300",
        mongo.url("earshot_outage")
    );
    let serve = GatewayProcess::serve(&["--store", &store_url]).await;
    mongo.stop();

    // The audio path does not notice the outage.
    let recording = fixture("lv_austen-0870.wav");
    let (samples, _) = read_samples(&recording);
    let mut socket = connect(&serve.ws_url("")).await;
    let session_id = read_session_id(&mut socket).await;
    let (messages, code) = stream_and_close(&mut socket, &samples, false).await;
    assert_eq!(code, Some(CloseCode::Normal));
    let text = final_text(&messages);
    assert!(
        word_errors(&recording.reference, &text).rate() < MAX_WER,
        "{text}"
    );

    // The outage shows in the metrics, and reading the transcript says why it cannot be read.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = serve.metrics().await;
        let up = metric_value(&metrics, "stt_store_up");
        let pending = metric_value(&metrics, "stt_store_pending_writes").unwrap_or(0.0);
        let retries = metric_value(&metrics, "stt_store_write_retries_total").unwrap_or(0.0);
        // Session start, finals and session end are all waiting.
        if up == Some(0.0) && pending >= 3.0 && retries >= 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, response) = http_get(&serve.addr, &format!("/v1/sessions/{session_id}")).await;
    assert_eq!(status, 503, "{response}");
    assert!(response.contains("store_unavailable"), "{response}");

    // The store comes back: every queued write lands, in order.
    mongo.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = serve.metrics().await;
        if metric_value(&metrics, "stt_store_up") == Some(1.0)
            && metric_value(&metrics, "stt_store_pending_writes") == Some(0.0)
        {
            assert_eq!(
                metric_value(&metrics, "stt_store_writes_rejected_total"),
                Some(0.0)
            );
            assert_eq!(
                metric_value(&metrics, "stt_store_writes_discarded_total"),
                Some(0.0)
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = serve.stored_session(&session_id).await;
    assert_eq!(stored["session"]["status"], "completed", "{stored}");
    assert_eq!(stored["session"]["close_reason"], "normal");
    assert_eq!(stored_text(&stored), text);
}
