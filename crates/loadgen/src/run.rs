//! The load generator: N concurrent WebSocket sessions (protocol v1), each streaming real speech
//! in 100 ms frames at a chosen pace, with latency bookkeeping per session.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::latency::{LatencyTracker, ResultSpan};

const SAMPLE_RATE: u64 = 16_000;
const BYTES_PER_MS: u64 = SAMPLE_RATE * 2 / 1000;
/// Silence between two files, as between two speakers' turns: without it the last words of
/// one file and the first of the next would run together into one utterance.
const GAP_BETWEEN_CLIPS: Duration = Duration::from_millis(1000);

/// One recording to stream: 16 kHz mono PCM16 bytes, and its reference transcript if known.
#[derive(Debug, Clone)]
pub struct Clip {
    pub name: String,
    pub pcm: Arc<[u8]>,
    pub reference: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `ws://HOST:PORT/v1/stt`
    pub url: String,
    pub sessions: usize,
    /// Sessions start evenly spread over this time.
    pub ramp: Duration,
    pub clips: Vec<Clip>,
    /// 1.0 = real time; 2.0 = twice as fast.
    pub pace: f64,
    /// Loop the clips until this much time has passed, then finish the current clip; `None`
    /// streams each session's playlist (every clip, starting at a different one) once.
    pub duration: Option<Duration>,
    pub frame: Duration,
}

/// Live counters for the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    pub sessions_up: AtomicUsize,
    pub sessions_done: AtomicUsize,
    pub results: AtomicU64,
    pub errors: AtomicU64,
    pub audio_ms_sent: AtomicU64,
}

/// What one session saw.
#[derive(Debug, Default)]
pub struct SessionOutcome {
    pub latency: LatencyTracker,
    pub connected: bool,
    pub connect_error: Option<String>,
    pub hypothesis: String,
    /// References of the clips sent whole, joined (empty when a clip has none).
    pub reference: Option<String>,
    pub audio_ms_sent: u64,
    pub partials: u64,
    pub finals: u64,
    pub slow_downs: u64,
    pub resumes: u64,
    pub errors: BTreeMap<String, u64>,
    pub close_code: Option<u16>,
    pub close_reason: Option<String>,
    /// Audio the server said it received (`closed.audio_ms`).
    pub server_audio_ms: Option<u64>,
    /// From sending `close` to the close frame.
    pub close_latency: Option<Duration>,
}

/// Runs every session; returns their outcomes in session order.
pub async fn run(config: Arc<LoadConfig>, progress: Arc<Progress>) -> Vec<SessionOutcome> {
    let started = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..config.sessions)
        .map(|idx| {
            let config = config.clone();
            let progress = progress.clone();
            let offset = if config.sessions > 1 {
                config.ramp.mul_f64(idx as f64 / config.sessions as f64)
            } else {
                Duration::ZERO
            };
            tokio::spawn(async move {
                tokio::time::sleep_until(started + offset).await;
                let outcome = run_session(&config, idx, &progress).await;
                progress.sessions_done.fetch_add(1, Ordering::Relaxed);
                outcome
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.unwrap_or_else(|err| SessionOutcome {
            connect_error: Some(format!("session task failed: {err}")),
            ..SessionOutcome::default()
        }));
    }
    outcomes
}

async fn run_session(config: &LoadConfig, idx: usize, progress: &Progress) -> SessionOutcome {
    let mut outcome = SessionOutcome::default();
    let url = format!(
        "{}{}sample_rate={SAMPLE_RATE}&encoding=pcm_s16le",
        config.url,
        if config.url.contains('?') { '&' } else { '?' }
    );
    // Nagle off, as a real-time client would: frames and `close` go out at once.
    let socket = match tokio_tungstenite::connect_async_with_config(&url, None, true).await {
        Ok((socket, _)) => socket,
        Err(err) => {
            progress.errors.fetch_add(1, Ordering::Relaxed);
            outcome.connect_error = Some(err.to_string());
            return outcome;
        }
    };
    outcome.connected = true;
    progress.sessions_up.fetch_add(1, Ordering::Relaxed);
    let (mut writer, mut reader) = socket.split();
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<Sent>();

    // The writer streams the playlist at pace, then asks to close.
    let sender = {
        let clips = config.clips.clone();
        let frame = config.frame;
        let pace = config.pace;
        let duration = config.duration;
        async move {
            let frame_bytes = (frame.as_millis() as u64 * BYTES_PER_MS) as usize;
            let silence = vec![0u8; (GAP_BETWEEN_CLIPS.as_millis() as u64 * BYTES_PER_MS) as usize];
            let started = tokio::time::Instant::now();
            let mut audio_ms = 0u64;
            let mut references = Vec::new();
            let mut all_have_references = true;
            let mut clip_idx = idx;
            'clips: loop {
                let clip = &clips[clip_idx % clips.len()];
                let gap = if clip_idx > idx {
                    silence.as_slice()
                } else {
                    &[]
                };
                clip_idx += 1;
                for chunk in gap.chunks(frame_bytes).chain(clip.pcm.chunks(frame_bytes)) {
                    let due = started + Duration::from_millis(audio_ms).div_f64(pace);
                    tokio::time::sleep_until(due).await;
                    audio_ms += chunk.len() as u64 / BYTES_PER_MS;
                    if writer
                        .send(Message::Binary(chunk.to_vec().into()))
                        .await
                        .is_err()
                    {
                        break 'clips;
                    }
                    let _ = sent_tx.send(Sent::Frame(audio_ms, Instant::now()));
                }
                match &clip.reference {
                    Some(reference) => references.push(reference.clone()),
                    None => all_have_references = false,
                }
                let done = match duration {
                    Some(limit) => started.elapsed() >= limit,
                    None => clip_idx - idx >= clips.len(),
                };
                if done {
                    break;
                }
            }
            let _ = sent_tx.send(Sent::Closing(Instant::now()));
            let _ = writer
                .send(Message::Text(r#"{"type":"close"}"#.into()))
                .await;
            let reference = all_have_references.then(|| references.join(" "));
            (writer, audio_ms, reference)
        }
    };

    let receiver = async {
        let mut finals = Vec::new();
        let mut closing_at = None;
        loop {
            let message = reader.next().await;
            // Apply what the writer sent before this message arrived.
            while let Ok(sent) = sent_rx.try_recv() {
                match sent {
                    Sent::Frame(end_ms, at) => outcome.latency.frame_sent(end_ms, at),
                    Sent::Closing(at) => {
                        outcome.latency.closing();
                        closing_at = Some(at);
                    }
                }
            }
            let now = Instant::now();
            match message {
                Some(Ok(Message::Text(text))) => {
                    let Ok(value) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    on_message(&value, now, &mut outcome, &mut finals, progress);
                }
                Some(Ok(Message::Close(frame))) => {
                    outcome.close_code = frame.map(|f| u16::from(f.code));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
        if let Some(at) = closing_at {
            outcome.close_latency = Some(at.elapsed());
        }
        finals.join(" ")
    };
    let ((mut writer, audio_ms, reference), hypothesis) = tokio::join!(sender, receiver);
    let _ = writer.close().await;
    outcome.hypothesis = hypothesis;
    outcome.reference = reference;
    outcome.audio_ms_sent = audio_ms;
    progress
        .audio_ms_sent
        .fetch_add(audio_ms, Ordering::Relaxed);
    progress.sessions_up.fetch_sub(1, Ordering::Relaxed);
    outcome
}

enum Sent {
    Frame(u64, Instant),
    Closing(Instant),
}

fn on_message(
    value: &Value,
    now: Instant,
    outcome: &mut SessionOutcome,
    finals: &mut Vec<String>,
    progress: &Progress,
) {
    let ms = |key: &str| value[key].as_u64().unwrap_or(0);
    match value["type"].as_str().unwrap_or_default() {
        "result" => {
            progress.results.fetch_add(1, Ordering::Relaxed);
            let is_final = value["is_final"].as_bool().unwrap_or(false);
            outcome.latency.result(
                ResultSpan {
                    start_ms: ms("start_ms"),
                    end_ms: ms("end_ms"),
                    is_final,
                },
                now,
            );
            if is_final {
                outcome.finals += 1;
                let text = value["text"].as_str().unwrap_or_default();
                if !text.is_empty() {
                    finals.push(text.to_string());
                }
            } else {
                outcome.partials += 1;
            }
        }
        "speech_started" => outcome.latency.speech_started(ms("at_ms")),
        "speech_ended" => outcome.latency.speech_ended(ms("at_ms")),
        "slow_down" => outcome.slow_downs += 1,
        "resume" => outcome.resumes += 1,
        "error" => {
            progress.errors.fetch_add(1, Ordering::Relaxed);
            let code = value["code"].as_str().unwrap_or("unknown").to_string();
            *outcome.errors.entry(code).or_default() += 1;
        }
        "closed" => {
            outcome.close_reason = value["reason"].as_str().map(str::to_string);
            outcome.server_audio_ms = value["audio_ms"].as_u64();
        }
        _ => {}
    }
}
