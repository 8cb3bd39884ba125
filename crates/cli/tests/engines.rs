//! `earshot gateway` in front of separate `earshot engine` processes: sessions spread over the
//! engines, engines that are down or full are skipped, and failures close with the documented
//! codes while the transcript so far is kept.

mod common;

use std::time::Duration;

use common::ws::{
    Socket, connect, final_text, of_type, read_session_id, read_to_close, send_audio, send_text,
    speech, stored_text,
};
use common::{EngineProcess, GatewayProcess, free_port, http_get, metric_value};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Nothing listens here: an engine that is down.
const DEAD_ENGINE: &str = "http://127.0.0.1:1";

/// An engine that takes one stream at a time, with its metrics on `/metrics` of the address
/// returned.
async fn single_stream_engine() -> (EngineProcess, String) {
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let engine =
        EngineProcess::start(&["--max-sessions", "1", "--metrics-listen", &metrics_addr]).await;
    (engine, metrics_addr)
}

async fn engine_metric(metrics_addr: &str, name: &str) -> f64 {
    let (status, metrics) = http_get(metrics_addr, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    metric_value(&metrics, name).unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
}

/// Opens a session and sends 2 s of speech, which makes the gateway open its engine stream;
/// returns the socket and the first message after the `session` one.
async fn start_speaking(gateway: &GatewayProcess) -> (Socket, Value) {
    let mut socket = connect(&gateway.ws_url("")).await;
    read_session_id(&mut socket).await;
    send_audio(&mut socket, &speech(2), false).await;
    let first = loop {
        let Some(Ok(message)) = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .expect("the server answers")
        else {
            panic!("the connection ended");
        };
        if let Message::Text(text) = message {
            break serde_json::from_str(&text).unwrap();
        }
    };
    (socket, first)
}

#[tokio::test]
async fn sessions_spread_over_engines_skipping_dead_and_full_ones() {
    let (first_engine, first_metrics) = single_stream_engine().await;
    let (second_engine, second_metrics) = single_stream_engine().await;
    let gateway =
        GatewayProcess::gateway(&[DEAD_ENGINE, &first_engine.url, &second_engine.url], &[]);
    gateway.wait_until_ready().await;

    // Two sessions: the dead engine is skipped and each live engine takes one.
    let (mut first, first_answer) = start_speaking(&gateway).await;
    let (mut second, second_answer) = start_speaking(&gateway).await;
    for answer in [&first_answer, &second_answer] {
        assert_ne!(answer["type"], "error", "{answer}");
    }
    for metrics_addr in [&first_metrics, &second_metrics] {
        assert_eq!(
            engine_metric(metrics_addr, "stt_engine_streams_active").await,
            1.0
        );
    }

    // A third: every live engine is full, so the client is told to try again later.
    let mut third = connect(&gateway.ws_url("")).await;
    read_session_id(&mut third).await;
    send_audio(&mut third, &speech(1), false).await;
    let (messages, code) = read_to_close(&mut third).await;
    let errors = of_type(&messages, "error");
    assert_eq!(errors.len(), 1, "{messages:?}");
    assert_eq!(errors[0]["code"], "overloaded");
    assert_eq!(messages.last().unwrap()["reason"], "overloaded");
    assert_eq!(code, Some(CloseCode::Again));
    let mut refused = 0.0;
    for metrics_addr in [&first_metrics, &second_metrics] {
        refused += engine_metric(metrics_addr, "stt_engine_streams_refused_total").await;
    }
    assert!(refused >= 2.0, "both live engines refused the third stream");

    // The first two are unaffected and end normally with their words.
    for socket in [&mut first, &mut second] {
        send_text(socket, r#"{"type":"close"}"#).await;
        let (messages, code) = read_to_close(socket).await;
        assert_eq!(code, Some(CloseCode::Normal), "{messages:?}");
        assert!(!final_text(&messages).is_empty(), "{messages:?}");
    }
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(&metrics, "stt_engines_configured"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(metric_value(&metrics, "stt_engines_serving"), Some(2.0));
}

#[tokio::test]
async fn an_engine_that_dies_mid_session_closes_it_with_1011_and_keeps_the_transcript() {
    let mut engine = EngineProcess::start(&[]).await;
    let gateway = GatewayProcess::gateway(&[&engine.url], &[]);
    gateway.wait_until_ready().await;
    let mut socket = connect(&gateway.ws_url("")).await;
    let session_id = read_session_id(&mut socket).await;
    let (mut writer, mut reader) = socket.split();
    let sender = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        for (idx, frame) in speech(60).chunks(1600).enumerate() {
            tokio::time::sleep_until(started + Duration::from_millis(100 * idx as u64)).await;
            let frame = earshot_audio::pcm::encode_pcm16(frame);
            if writer.send(Message::Binary(frame.into())).await.is_err() {
                break;
            }
        }
        writer
    });

    let mut messages: Vec<Value> = Vec::new();
    let mut killed = false;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(120), reader.next())
            .await
            .expect("the server answers")
        {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                let is_final = message["is_final"] == true && message["text"] != "";
                messages.push(message);
                if is_final && !killed {
                    engine.child.kill().unwrap();
                    killed = true;
                }
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("{err}: {messages:?}"),
            None => break None,
        }
    };
    sender.abort();
    assert!(killed, "a final before the engine died: {messages:?}");
    let errors = of_type(&messages, "error");
    assert_eq!(errors.len(), 1, "{messages:?}");
    assert_eq!(errors[0]["code"], "engine_failure");
    let closed = messages.last().unwrap();
    assert_eq!(closed["type"], "closed");
    assert_eq!(closed["reason"], "engine_failure");
    assert_eq!(code, Some(CloseCode::Error));

    let stored = gateway.stored_session(&session_id).await;
    assert_eq!(stored["session"]["status"], "failed", "{stored}");
    assert_eq!(stored["session"]["close_reason"], "engine_failure");
    assert_eq!(stored_text(&stored), final_text(&messages));
}

#[tokio::test]
async fn with_every_engine_down_the_gateway_is_not_ready_and_sessions_close_with_1011() {
    let gateway = GatewayProcess::gateway(&[DEAD_ENGINE], &[]);
    // Give the health check time to run.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, response) = http_get(&gateway.addr, "/readyz").await;
    assert_eq!(status, 503, "{response}");
    assert_eq!(http_get(&gateway.addr, "/healthz").await.0, 200);

    let mut socket = connect(&gateway.ws_url("")).await;
    read_session_id(&mut socket).await;
    send_audio(&mut socket, &speech(1), false).await;
    let (messages, code) = read_to_close(&mut socket).await;
    let errors = of_type(&messages, "error");
    assert_eq!(errors.len(), 1, "{messages:?}");
    assert_eq!(errors[0]["code"], "engine_unavailable");
    assert!(
        errors[0]["message"].as_str().unwrap().contains(DEAD_ENGINE),
        "the message names the engine: {errors:?}"
    );
    assert_eq!(code, Some(CloseCode::Error));
}
