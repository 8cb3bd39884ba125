//! `earshot transcribe`: streams a WAV file through the engine (in-process over loopback gRPC,
//! or a running engine) and prints partial and final results as they arrive.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use earshot_engine::client::{self, StreamOptions};
use earshot_proto::{RecognitionConfig, ResponseKind, StreamingRecognizeResponse};
use serde::Serialize;

use crate::{ModelArgs, RecognitionArgs};

#[derive(Args)]
pub struct TranscribeArgs {
    /// A WAV file (any rate from 8 to 48 kHz; channels are mixed down).
    file: PathBuf,
    /// Send the audio at real-time pace, as a live speaker would.
    #[arg(long)]
    realtime: bool,
    /// Print one JSON object per result instead of text.
    #[arg(long)]
    json: bool,
    /// Use a running engine (e.g. http://127.0.0.1:50051) instead of starting one.
    #[arg(long)]
    engine: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    recognition: RecognitionArgs,
}

#[derive(Serialize)]
struct JsonResult<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    is_final: bool,
    confidence: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    stability: Option<f32>,
    start_ms: i64,
    end_ms: i64,
    segment: i32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    words: Vec<JsonWord<'a>>,
}

#[derive(Serialize)]
struct JsonWord<'a> {
    word: &'a str,
    start_ms: i64,
    end_ms: i64,
    confidence: f32,
}

pub async fn run(args: TranscribeArgs) -> anyhow::Result<()> {
    let audio = earshot_audio::wav::read_wav(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let config = args
        .recognition
        .engine_config(None, std::time::Duration::ZERO)?;

    let (url, engine) = match &args.engine {
        Some(url) => (url.clone(), None),
        None => {
            let recognizer = args.model.load()?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let engine = tokio::spawn(earshot_engine::run_engine(
                config.clone(),
                Box::new(recognizer),
                listener,
                earshot_engine::EngineMetrics::default(),
                async move {
                    let _ = stopped.await;
                },
            ));
            (url, Some((stop, engine)))
        }
    };

    let channel = connect_with_retry(&url).await?;
    let options = StreamOptions {
        pace: args.realtime.then_some(1.0),
        recognition_config: Some(RecognitionConfig {
            chunk_ms: config.chunk.as_millis() as i32,
            endpoint_ms: config.endpoint_silence.as_millis() as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut printer = Printer::new(args.json);
    let report = client::stream_audio(
        channel,
        &audio.samples,
        audio.sample_rate,
        &options,
        |response| printer.print(response),
    )
    .await?;
    printer.finish();

    if let Some((stop, engine)) = engine {
        let _ = stop.send(());
        engine.await??;
    }
    if let Some(status) = report.error {
        anyhow::bail!("engine ended the stream: {}", status.message());
    }
    Ok(())
}

/// The in-process engine binds before it warms up; the first connection may still race it.
async fn connect_with_retry(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    let mut attempts = 0;
    loop {
        match client::connect(url).await {
            Ok(channel) => return Ok(channel),
            Err(err) if attempts < 20 => {
                attempts += 1;
                tracing::debug!(%err, "engine not reachable yet");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => {
                return Err(err).with_context(|| format!("cannot reach the engine at {url}"));
            }
        }
    }
}

struct Printer {
    json: bool,
    terminal: bool,
    partial_shown: bool,
}

impl Printer {
    fn new(json: bool) -> Self {
        Self {
            json,
            terminal: std::io::stdout().is_terminal(),
            partial_shown: false,
        }
    }

    fn print(&mut self, response: &StreamingRecognizeResponse) {
        if response.kind != ResponseKind::Result as i32 {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.json {
            let result = JsonResult {
                kind: if response.is_final {
                    "final"
                } else {
                    "partial"
                },
                text: &response.transcript,
                is_final: response.is_final,
                confidence: response.confidence,
                stability: (!response.is_final).then_some(response.stability),
                start_ms: response.start_ms,
                end_ms: response.end_ms,
                segment: response.segment_index,
                words: response
                    .words
                    .iter()
                    .map(|w| JsonWord {
                        word: &w.word,
                        start_ms: w.start_ms,
                        end_ms: w.end_ms,
                        confidence: w.confidence,
                    })
                    .collect(),
            };
            if let Ok(line) = serde_json::to_string(&result) {
                let _ = writeln!(out, "{line}");
            }
            return;
        }
        if response.is_final {
            if self.partial_shown {
                let _ = write!(out, "\r\x1b[2K");
                self.partial_shown = false;
            }
            if !response.transcript.is_empty() {
                let _ = writeln!(
                    out,
                    "[{} -> {}] {}",
                    timestamp(response.start_ms),
                    timestamp(response.end_ms),
                    response.transcript
                );
            }
        } else if self.terminal {
            // Overwrite the previous partial in place, dimmed.
            let _ = write!(out, "\r\x1b[2K\x1b[2m{}\x1b[0m", response.transcript);
            self.partial_shown = true;
        } else {
            let _ = writeln!(out, "(partial) {}", response.transcript);
        }
        let _ = out.flush();
    }

    fn finish(&mut self) {
        if self.partial_shown {
            print!("\r\x1b[2K");
            let _ = std::io::stdout().flush();
        }
    }
}

fn timestamp(ms: i64) -> String {
    let ms = ms.max(0);
    format!(
        "{:02}:{:02}.{:02}",
        ms / 60_000,
        (ms / 1000) % 60,
        (ms % 1000) / 10
    )
}
