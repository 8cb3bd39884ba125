//! A WebSocket client of protocol v1 (docs/websocket.md) for the tests.

use std::time::Duration;

use earshot_audio::pcm;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{fixtures, read_samples};

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(url: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("WebSocket upgrade");
    socket
}

/// Reads the first message, which must be `session`, and returns the session id.
pub async fn read_session_id(socket: &mut Socket) -> String {
    let Some(Ok(Message::Text(first))) = socket.next().await else {
        panic!("session message expected");
    };
    let session: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(session["type"], "session", "{session}");
    session["session_id"].as_str().unwrap().to_string()
}

/// Sends 16 kHz samples as PCM16 frames of 100 ms, at real-time pace or as fast as possible.
pub async fn send_audio(socket: &mut Socket, samples: &[f32], realtime: bool) {
    let started = tokio::time::Instant::now();
    for (idx, frame) in samples.chunks(1600).enumerate() {
        if realtime {
            tokio::time::sleep_until(started + Duration::from_millis(100 * (idx as u64 + 1))).await;
        }
        socket
            .send(Message::Binary(pcm::encode_pcm16(frame).into()))
            .await
            .unwrap();
    }
}

pub async fn send_text(socket: &mut Socket, text: &str) {
    socket.send(Message::Text(text.into())).await.unwrap();
}

/// Reads messages until the close frame; returns the JSON messages and the close code.
pub async fn read_to_close(socket: &mut Socket) -> (Vec<Value>, Option<CloseCode>) {
    read_stream_to_close(socket).await
}

/// [`read_to_close`] on any stream of messages (such as a socket's read half).
pub async fn read_stream_to_close<S>(socket: &mut S) -> (Vec<Value>, Option<CloseCode>)
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut messages = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(120), socket.next())
            .await
            .expect("the server answers");
        match next {
            Some(Ok(Message::Text(text))) => messages.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => return (messages, frame.map(|f| f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (messages, None),
        }
    }
}

pub fn of_type<'a>(messages: &'a [Value], kind: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| m["type"] == kind).collect()
}

/// The text of the final results that have any, joined.
pub fn final_text(messages: &[Value]) -> String {
    of_type(messages, "result")
        .iter()
        .filter(|r| r["is_final"] == true && r["text"] != "")
        .map(|r| r["text"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

/// About `seconds` of real speech: the bundled recordings back to back.
pub fn speech(seconds: usize) -> Vec<f32> {
    let mut samples = Vec::new();
    while samples.len() < seconds * 16_000 {
        for recording in fixtures() {
            samples.extend(read_samples(&recording).0);
        }
    }
    samples.truncate(seconds * 16_000);
    samples
}

/// Streams `samples`, sends `close`, and reads everything up to the close frame.
pub async fn stream_and_close(
    socket: &mut Socket,
    samples: &[f32],
    realtime: bool,
) -> (Vec<Value>, Option<CloseCode>) {
    send_audio(socket, samples, realtime).await;
    send_text(socket, r#"{"type":"close"}"#).await;
    read_to_close(socket).await
}

/// The text of a stored session's segments, joined (`GET /v1/sessions/{id}`).
pub fn stored_text(stored: &Value) -> String {
    stored["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|segment| segment["text"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}
