//! Engine benchmark: N concurrent real-time streams of real speech through the in-process engine
//! over loopback gRPC, with the default batching and with `--max-batch 1`.
//!
//! `cargo run --release -p earshot-cli --example engine_bench -- --streams 1,2,4,8`
//!
//! Reports result latency (from sending the chunk that holds a result's end to receiving the
//! result), first-partial latency (from the chunk holding the speech onset), final latency after
//! the end of speech (includes the endpoint silence), model real-time factor and batch sizes.

use std::time::{Duration, Instant};

use clap::Parser;
use earshot_engine::client::{self, StreamOptions, StreamReport};
use earshot_engine::{EngineConfig, EngineMetrics, RunningEngine};
use earshot_loadgen::corpus;
use earshot_loadgen::stats::{Percentiles, fmt_ms};
use earshot_loadgen::wer::{WordErrors, word_errors};
use earshot_model::WhisperRecognizer;
use earshot_proto::{RecognitionConfig, ResponseKind};

#[derive(Parser)]
struct Args {
    /// Concurrent stream counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    streams: Vec<usize>,
    /// Seconds of audio per stream.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Batch sizes to compare.
    #[arg(long, value_delimiter = ',', default_value = "4,1")]
    max_batch: Vec<usize>,
    #[arg(long)]
    model: Option<std::path::PathBuf>,
}

struct Clip {
    samples: Vec<f32>,
    reference: String,
}

#[derive(Default)]
struct Measured {
    result_latency: Vec<Duration>,
    first_partial: Vec<Duration>,
    final_latency: Vec<Duration>,
    errors: WordErrors,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let model_dir = args
        .model
        .clone()
        .unwrap_or_else(earshot_model::default_model_dir);
    let speech_dir = corpus::shared_dir().unwrap_or_else(corpus::fixtures_dir);
    println!("speech from {}", speech_dir.display());
    let recordings = corpus::load(&speech_dir)?;
    let clips: Vec<Clip> = recordings
        .iter()
        .filter(|r| !r.name.starts_with("long_"))
        .map(|r| {
            let audio = earshot_audio::wav::read_wav(&r.path)?;
            anyhow::ensure!(audio.sample_rate == 16_000, "{} is not 16 kHz", r.name);
            Ok(Clip {
                samples: audio.samples,
                reference: r.reference.clone(),
            })
        })
        .collect::<anyhow::Result<_>>()?;

    println!(
        "| max batch | streams | result p50 | result p95 | first partial p50 | final p50 | final p95 | model RTF | mean batch | WER |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut busy_per_audio: Vec<(usize, usize, f64)> = Vec::new();
    for &max_batch in &args.max_batch {
        for &n_streams in &args.streams {
            let recognizer = WhisperRecognizer::load(&model_dir, &earshot_model::best_device())?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            let config = EngineConfig {
                max_batch,
                ..EngineConfig::default()
            };
            let metrics = EngineMetrics::default();
            let engine =
                RunningEngine::start(config, Box::new(recognizer), listener, metrics.clone())
                    .await?;
            // Leave the warm-up out.
            let busy_before = metrics.model_busy_seconds.get();
            let batches_before = metrics.batches.get();
            let windows_before = metrics.windows_decoded();

            let streams = (0..n_streams).map(|stream_idx| {
                let (samples, reference) = playlist(&clips, stream_idx, args.seconds);
                let url = url.clone();
                async move {
                    let channel = client::connect(&url).await?;
                    let options = StreamOptions {
                        pace: Some(1.0),
                        recognition_config: Some(RecognitionConfig {
                            voice_activity_events: true,
                            ..Default::default()
                        }),
                        trailing_silence: Duration::from_secs(1),
                        ..Default::default()
                    };
                    let report =
                        client::stream_audio(channel, &samples, 16_000, &options, |_| {}).await?;
                    anyhow::Ok((report, reference, samples.len()))
                }
            });
            let started = Instant::now();
            let reports = futures::future::join_all(streams).await;
            let wall = started.elapsed();
            let mut measured = Measured::default();
            let mut audio_seconds = 0.0;
            for outcome in reports {
                let (report, reference, n_samples) = outcome?;
                audio_seconds += n_samples as f64 / 16_000.0;
                measure(&report, &reference, &mut measured);
            }
            let busy = Duration::from_secs_f64(metrics.model_busy_seconds.get() - busy_before);
            let batches = metrics.batches.get() - batches_before;
            let windows = metrics.windows_decoded() - windows_before;
            engine.shutdown().await?;

            let rtf = busy.as_secs_f64() / audio_seconds;
            busy_per_audio.push((max_batch, n_streams, rtf));
            let result = Percentiles::of(&measured.result_latency);
            let first = Percentiles::of(&measured.first_partial);
            let finals = Percentiles::of(&measured.final_latency);
            println!(
                "| {max_batch} | {n_streams} | {} | {} | {} | {} | {} | {rtf:.3} | {:.2} | {:.1} % |",
                fmt_ms(result.p50),
                fmt_ms(result.p95),
                fmt_ms(first.p50),
                fmt_ms(finals.p50),
                fmt_ms(finals.p95),
                windows as f64 / batches.max(1) as f64,
                100.0 * measured.errors.rate(),
            );
            eprintln!(
                "  ({} results, {} finals, wall {:.1}s, model busy {:.1}s)",
                result.count,
                finals.count,
                wall.as_secs_f64(),
                busy.as_secs_f64()
            );
        }
    }
    if args.max_batch.len() >= 2 {
        let (batched, single) = (args.max_batch[0], args.max_batch[args.max_batch.len() - 1]);
        println!(
            "\nbatching gain (model time per audio second, max-batch {single} / max-batch {batched}):"
        );
        for &n_streams in &args.streams {
            let find = |batch| {
                busy_per_audio
                    .iter()
                    .find(|(b, n, _)| *b == batch && *n == n_streams)
                    .map(|(_, _, rtf)| *rtf)
            };
            if let (Some(with), Some(without)) = (find(batched), find(single)) {
                println!("  {n_streams} streams: {:.2}x", without / with);
            }
        }
    }
    Ok(())
}

/// Recordings back to back (with a second of silence between them) for about `seconds`,
/// starting at a different recording for each stream.
fn playlist(clips: &[Clip], stream_idx: usize, seconds: u64) -> (Vec<f32>, String) {
    let mut samples = Vec::new();
    let mut reference = String::new();
    let target = seconds as usize * 16_000;
    let mut idx = stream_idx * 3;
    while samples.len() < target {
        let clip = &clips[idx % clips.len()];
        samples.extend(&clip.samples);
        samples.extend(std::iter::repeat_n(0.0, 16_000));
        reference.push_str(&clip.reference);
        reference.push(' ');
        idx += 1;
    }
    (samples, reference)
}

fn measure(report: &StreamReport, reference: &str, measured: &mut Measured) {
    let sent_at = |audio_ms: i64| {
        let audio = Duration::from_millis(audio_ms.max(0) as u64);
        report
            .chunks_sent
            .iter()
            .find(|(end, _)| *end >= audio)
            .or(report.chunks_sent.last())
            .map(|(_, at)| *at)
    };
    let mut onset: Option<Instant> = None;
    let mut speech_end: Option<Instant> = None;
    for timed in &report.responses {
        let response = &timed.response;
        if response.kind == ResponseKind::SpeechStarted as i32 {
            onset = sent_at(response.event_ms);
            continue;
        }
        if response.kind == ResponseKind::SpeechEnded as i32 {
            speech_end = sent_at(response.event_ms);
            continue;
        }
        if response.kind != ResponseKind::Result as i32 {
            continue;
        }
        if response.is_final {
            if let Some(end) = speech_end.take() {
                measured
                    .final_latency
                    .push(timed.received_at.saturating_duration_since(end));
            }
            continue;
        }
        if let Some(sent) = sent_at(response.end_ms) {
            measured
                .result_latency
                .push(timed.received_at.saturating_duration_since(sent));
        }
        if let Some(start) = onset.take() {
            measured
                .first_partial
                .push(timed.received_at.saturating_duration_since(start));
        }
    }
    measured.errors = measured.errors + word_errors(reference, &report.final_text());
}
