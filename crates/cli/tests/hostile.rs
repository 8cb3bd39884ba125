//! Hostile and broken clients against the real `earshot serve` (real model, loopback): reset
//! floods, slow readers, silent sockets, dribbled headers, oversize messages, unparsable
//! queries, one address holding many sessions, audio far faster than real time, and SIGTERM
//! with live sessions. After each, the gateway still serves a normal client and holds no
//! leaked slot.

mod common;

use std::time::{Duration, Instant};

use common::ws::*;
use common::*;
use earshot_loadgen::wer::word_errors;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn connect_to(serve: &GatewayProcess, query: &str) -> Socket {
    let mut socket = connect(&serve.ws_url(query)).await;
    read_session_id(&mut socket).await;
    socket
}

/// The gateway's resident memory, in KiB.
fn rss_kib(serve: &GatewayProcess) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", serve.child.id())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap()
}

async fn gauge(serve: &GatewayProcess, name: &str) -> f64 {
    metric_value(&serve.metrics().await, name).unwrap_or(0.0)
}

/// Waits until `name` reads `want` (the gateway frees what a client left behind at its pace).
async fn wait_for_metric(serve: &GatewayProcess, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = gauge(serve, name).await;
        if value == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {value}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A normal client still gets its words transcribed.
async fn a_normal_client_is_served(serve: &GatewayProcess) {
    let recording = fixture("jfk.wav");
    let (samples, _) = read_samples(&recording);
    let mut socket = connect_to(serve, "").await;
    send_audio(&mut socket, &samples, false).await;
    send_text(&mut socket, r#"{"type":"close"}"#).await;
    let (messages, code) = read_to_close(&mut socket).await;
    assert_eq!(code, Some(CloseCode::Normal), "{messages:?}");
    let text = final_text(&messages);
    assert!(
        word_errors(&recording.reference, &text).rate() < MAX_WER,
        "{text:?}"
    );
}

/// A WebSocket client whose receive buffer holds 1 KiB: the gateway's writes to it block as soon
/// as it stops reading.
async fn tiny_buffer_client(serve: &GatewayProcess) -> Socket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let stream = socket.connect(serve.addr.parse().unwrap()).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        serve.ws_url(""),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    ws
}

/// Asks for about 12 MB of pongs without reading any, until the connection stops taking more.
async fn flood_unread_pongs(ws: &mut Socket) {
    let ping = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(60_000));
    for _ in 0..200 {
        let sent = tokio::time::timeout(
            Duration::from_secs(2),
            ws.send(Message::Text(ping.clone().into())),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            break;
        }
    }
}

const UPGRADE: &str = "GET /v1/stt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// The audit's reset flood: upgrade requests reset by the client, some before the answer and
/// some after it. Every slot comes back.
#[tokio::test]
async fn a_flood_of_reset_upgrades_leaks_no_slot() {
    let serve =
        GatewayProcess::serve(&["--max-connections", "64", "--max-sessions-per-ip", "0"]).await;
    let rss_before = rss_kib(&serve);
    let started = Instant::now();
    for idx in 0..3000 {
        let mut stream = TcpStream::connect(&serve.addr).await.unwrap();
        stream.write_all(UPGRADE.as_bytes()).await.unwrap();
        if idx % 2 == 1 {
            // Read the 101 first, then reset an open WebSocket.
            let mut buffer = [0u8; 256];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
        }
        stream.set_zero_linger().unwrap();
        drop(stream);
    }
    let flood = started.elapsed();
    wait_for_metric(&serve, "stt_websocket_connections_active", 0.0).await;
    a_normal_client_is_served(&serve).await;
    wait_for_metric(&serve, "stt_websocket_connections_active", 0.0).await;
    let rss_after = rss_kib(&serve);
    eprintln!(
        "3000 reset upgrades in {flood:?}; gateway RSS {rss_before} KiB before, {rss_after} KiB after"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "{rss_before} -> {rss_after} KiB"
    );
}

/// A client with a tiny receive buffer that asks for large answers and never reads, then
/// resets (the audit's panic): the session ends, nothing panics, the slot is freed.
#[tokio::test]
async fn slow_readers_that_reset_or_never_read_are_closed_and_freed() {
    let serve = GatewayProcess::serve(&["--write-timeout-secs", "2"]).await;
    let rss_before = rss_kib(&serve);
    for reset in [true, false] {
        let mut ws = tiny_buffer_client(&serve).await;
        flood_unread_pongs(&mut ws).await;
        if reset {
            let stream = ws.into_inner();
            let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = stream else {
                panic!("plain TCP expected");
            };
            tcp.set_zero_linger().unwrap();
            drop(tcp);
        } else {
            // Stop reading; the write timeout ends the session.
            tokio::time::sleep(Duration::from_secs(4)).await;
            drop(ws);
        }
    }
    wait_for_metric(&serve, "stt_websocket_connections_active", 0.0).await;
    let rss_after = rss_kib(&serve);
    eprintln!("slow readers: gateway RSS {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "{rss_before} -> {rss_after} KiB"
    );
    assert!(
        gauge(
            &serve,
            "stt_sessions_closed_total{reason=\"slow_consumer\"}"
        )
        .await
            >= 1.0,
        "{}",
        serve.metrics().await
    );
    a_normal_client_is_served(&serve).await;
}

#[tokio::test]
async fn silent_sockets_and_idle_sessions_are_closed_by_their_timeouts() {
    let serve = GatewayProcess::serve(&[
        "--first-message-timeout-secs",
        "1",
        "--idle-timeout-secs",
        "2",
    ])
    .await;
    // Never a message after the upgrade.
    let mut silent = connect_to(&serve, "").await;
    let started = Instant::now();
    let (messages, code) = read_to_close(&mut silent).await;
    assert_eq!(
        of_type(&messages, "error")[0]["code"],
        "first_message_timeout"
    );
    assert_eq!(code, Some(CloseCode::Policy));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Audio, then silence from the client: finals, then idle_timeout and 1000.
    let mut idle = connect_to(&serve, "").await;
    let (samples, _) = read_samples(&fixture("jfk.wav"));
    send_audio(&mut idle, &samples, false).await;
    let (messages, code) = read_to_close(&mut idle).await;
    let errors = of_type(&messages, "error");
    assert_eq!(errors.len(), 1, "{messages:?}");
    assert_eq!(errors[0]["code"], "idle_timeout");
    assert_eq!(code, Some(CloseCode::Normal));
    assert!(final_text(&messages).contains("country"), "{messages:?}");
    wait_for_metric(&serve, "stt_websocket_connections_active", 0.0).await;
}

#[tokio::test]
async fn dribbled_and_missing_headers_are_cut_off() {
    let serve = GatewayProcess::serve(&["--header-read-timeout-secs", "1"]).await;
    // Nothing at all after connecting.
    let mut mute = TcpStream::connect(&serve.addr).await.unwrap();
    // A request line, then one header byte every 200 ms (slowloris).
    let mut dribble = TcpStream::connect(&serve.addr).await.unwrap();
    dribble.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let dribbling = tokio::spawn(async move {
        for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if dribble.write_all(&[*byte]).await.is_err() {
                return Some(started.elapsed());
            }
        }
        None
    });
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match mute.read(&mut buffer).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the silent connection is closed");
    assert!(closed < Duration::from_secs(5), "{closed:?}");
    let cut = dribbling
        .await
        .unwrap()
        .expect("the dribbling connection is closed");
    assert!(cut < Duration::from_secs(6), "{cut:?}");
    // A keep-alive connection left idle after a request.
    let mut idle = TcpStream::connect(&serve.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let idle_since = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match idle.read(&mut buffer).await {
                Ok(0) | Err(_) => return idle_since.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the idle keep-alive connection is closed");
    assert!(closed < Duration::from_secs(5), "{closed:?}");
    assert_eq!(http_get(&serve.addr, "/healthz").await.0, 200);
    // Only the connection asking for the metrics is left.
    wait_for_metric(&serve, "stt_http_connections_active", 1.0).await;
}

#[tokio::test]
async fn oversize_messages_get_1009_and_bad_query_values_1003() {
    let serve = GatewayProcess::serve(&[]).await;
    for message in [
        Message::Binary(vec![0u8; 600 * 1024].into()),
        Message::Text("x".repeat(600 * 1024).into()),
    ] {
        let mut socket = connect_to(&serve, "").await;
        let _ = socket.send(message).await;
        let (messages, code) = read_to_close(&mut socket).await;
        assert_eq!(
            of_type(&messages, "error")[0]["code"],
            "message_too_big",
            "{messages:?}"
        );
        assert_eq!(messages.last().unwrap()["reason"], "message_too_big");
        assert_eq!(code, Some(CloseCode::Size));
    }
    for query in ["?sample_rate=99999999999", "?interim_results=maybe"] {
        let mut socket = connect(&serve.ws_url(query)).await;
        let (messages, code) = read_to_close(&mut socket).await;
        let error = &of_type(&messages, "error")[0];
        assert_eq!(error["code"], "invalid_parameter", "{query}");
        assert_eq!(code, Some(CloseCode::Unsupported), "{query}");
    }
    // Refused before any audio: nothing stored.
    let (_, listing) = http_get(&serve.addr, "/v1/sessions").await;
    let listing: Value = serde_json::from_str(body(&listing)).unwrap();
    assert_eq!(
        listing["sessions"].as_array().unwrap().len(),
        0,
        "{listing}"
    );
    wait_for_metric(&serve, "stt_websocket_connections_active", 0.0).await;
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share() {
    let serve = GatewayProcess::serve(&["--max-sessions-per-ip", "2"]).await;
    let first = connect_to(&serve, "").await;
    let _second = connect_to(&serve, "").await;
    let (status, response) = http_get_upgrade(&serve.addr).await;
    assert_eq!(status, 429, "{response}");
    assert!(
        response.to_lowercase().contains("retry-after"),
        "{response}"
    );
    drop(first);
    wait_for_metric(&serve, "stt_websocket_connections_active", 1.0).await;
    let _third = connect_to(&serve, "").await;
    assert_eq!(
        gauge(&serve, "stt_connections_refused_total{reason=\"per_ip\"}").await,
        1.0
    );
}

#[tokio::test]
async fn audio_far_faster_than_real_time_is_refused_with_too_fast() {
    let serve = GatewayProcess::serve(&[]).await;
    let socket = connect_to(&serve, "").await;
    // Two minutes of silence as fast as the connection takes it: past 4x real time over 10 s.
    let silence = vec![0f32; 16_000 * 120];
    let (mut writer, mut reader) = socket.split();
    let flood = tokio::spawn(async move {
        for frame in silence.chunks(1600) {
            let bytes = earshot_audio::pcm::encode_pcm16(frame);
            if writer.send(Message::Binary(bytes.into())).await.is_err() {
                break;
            }
        }
    });
    let (messages, code) = read_stream_to_close(&mut reader).await;
    let _ = flood.await;
    assert_eq!(
        of_type(&messages, "error")[0]["code"],
        "too_fast",
        "{messages:?}"
    );
    assert_eq!(code, Some(CloseCode::Policy));
}

/// SIGTERM with two live sessions: each gets its finals, `closed` with `server_shutdown` and
/// 1012; the process exits within the deadline with the store flushed and no `active` row.
#[tokio::test]
async fn sigterm_drains_live_sessions_and_exits_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("transcripts.sqlite3");
    let store = format!("sqlite://{}", db.display());
    let mut serve =
        GatewayProcess::serve(&["--store", &store, "--shutdown-deadline-secs", "15"]).await;
    let (samples, _) = read_samples(&fixture("jfk.wav"));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let url = serve.ws_url("");
        let samples = samples.clone();
        clients.push(tokio::spawn(async move {
            let mut socket = connect(&url).await;
            let id = read_session_id(&mut socket).await;
            let (mut writer, mut reader) = socket.split();
            // Real-time speech until the server ends the session.
            let sender = tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                for (idx, frame) in samples.chunks(1600).enumerate() {
                    tokio::time::sleep_until(started + Duration::from_millis(100 * idx as u64))
                        .await;
                    let bytes = earshot_audio::pcm::encode_pcm16(frame);
                    if writer.send(Message::Binary(bytes.into())).await.is_err() {
                        return;
                    }
                }
            });
            let (messages, code) = read_stream_to_close(&mut reader).await;
            sender.abort();
            (id, messages, code)
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    serve.terminate();
    let signalled = Instant::now();
    // Draining: no new sessions, and not ready (once the signal has been handled).
    let mut ready = 200;
    while ready == 200 && signalled.elapsed() < Duration::from_secs(3) {
        ready = http_get(&serve.addr, "/readyz").await.0;
        if ready == 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(ready == 503 || ready == 0, "{ready}");
    for client in clients {
        let (id, messages, code) = client.await.unwrap();
        assert_eq!(code, Some(CloseCode::Restart), "{messages:?}");
        assert_eq!(messages.last().unwrap()["reason"], "server_shutdown");
        assert!(
            !final_text(&messages).is_empty(),
            "{id}: finals before the close"
        );
    }
    let (status, took) = serve.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(15) || signalled.elapsed() < Duration::from_secs(15));
    // The store, read directly after the exit.
    let stored = earshot_store::SqliteStore::open(&db).await.unwrap();
    let sessions = earshot_store::TranscriptStore::list_sessions(&stored, 10, None)
        .await
        .unwrap();
    assert_eq!(sessions.len(), 2);
    for session in sessions {
        assert_eq!(
            session.status,
            earshot_store::SessionStatus::Completed,
            "{session:?}"
        );
        assert_eq!(session.close_reason.as_deref(), Some("server_shutdown"));
    }
}

/// A second SIGTERM does not wait: the process exits at once, and a session that could not
/// end (its client reads nothing, so its last messages cannot be written) is stored as
/// interrupted.
#[tokio::test]
async fn a_second_sigterm_exits_at_once_with_sessions_stored_as_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("transcripts.sqlite3");
    let store = format!("sqlite://{}", db.display());
    let mut serve = GatewayProcess::serve(&["--store", &store, "--write-timeout-secs", "60"]).await;
    let mut ws = tiny_buffer_client(&serve).await;
    let (samples, _) = read_samples(&fixture("jfk.wav"));
    send_audio(&mut ws, &samples[..16_000], false).await;
    flood_unread_pongs(&mut ws).await;
    serve.terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    serve.terminate();
    let (status, took) = serve.wait_exit(Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "{took:?} {status:?}");
    let stored = earshot_store::SqliteStore::open(&db).await.unwrap();
    let sessions = earshot_store::TranscriptStore::list_sessions(&stored, 10, None)
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        sessions[0].status,
        earshot_store::SessionStatus::Interrupted,
        "{:?}",
        sessions[0]
    );
    drop(ws);
}
