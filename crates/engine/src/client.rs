//! A streaming client for the engine, used by `earshot transcribe`, the tests and benchmarks:
//! sends audio in fixed chunks (optionally at real-time pace) and timestamps every response.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use earshot_audio::{Encoding, pcm};
use earshot_proto::speech_to_text_client::SpeechToTextClient;
use earshot_proto::{
    AudioConfig, RecognitionConfig, StreamingRecognizeRequest, StreamingRecognizeResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

/// How to send a recording.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub chunk: Duration,
    /// 1.0 sends at real-time pace, 2.0 twice as fast; `None` sends as fast as the engine reads.
    pub pace: Option<f64>,
    pub recognition_config: Option<RecognitionConfig>,
    pub session_id: String,
    /// Silence appended after the audio (lets the endpointer close the last utterance the way a
    /// live speaker's pause would, instead of the end-of-stream flush).
    pub trailing_silence: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            chunk: Duration::from_millis(100),
            pace: None,
            recognition_config: None,
            session_id: String::new(),
            trailing_silence: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TimedResponse {
    pub response: StreamingRecognizeResponse,
    pub received_at: Instant,
}

/// Everything observed on one stream.
#[derive(Debug)]
pub struct StreamReport {
    pub responses: Vec<TimedResponse>,
    /// For each chunk: the audio time at its end and when it was handed to the transport.
    pub chunks_sent: Vec<(Duration, Instant)>,
    pub started_at: Instant,
    /// When the request stream was half-closed.
    pub finished_sending_at: Option<Instant>,
    /// The status the engine ended the stream with, if not OK.
    pub error: Option<Status>,
}

impl StreamReport {
    pub fn finals(&self) -> impl Iterator<Item = &StreamingRecognizeResponse> {
        self.responses
            .iter()
            .map(|timed| &timed.response)
            .filter(|response| response.is_final)
    }

    /// The finals' text joined with spaces.
    pub fn final_text(&self) -> String {
        self.finals()
            .map(|response| response.transcript.trim())
            .filter(|text| !text.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The first request of a stream of 16-bit mono PCM at `sample_rate` (no audio, the engine's
/// recognition defaults); an empty `session_id` lets the engine choose one.
pub fn first_request(session_id: &str, sample_rate: u32) -> StreamingRecognizeRequest {
    StreamingRecognizeRequest {
        session_id: session_id.into(),
        audio_config: Some(AudioConfig {
            sample_rate: sample_rate as i32,
            channels: 1,
            encoding: Encoding::PcmInt16.as_str().into(),
        }),
        ..Default::default()
    }
}

/// Every response of a stream until it ends, and how it ended (`Status::ok` for a clean end).
pub async fn read_to_end(
    mut inbound: Streaming<StreamingRecognizeResponse>,
) -> (Vec<StreamingRecognizeResponse>, Status) {
    let mut responses = Vec::new();
    loop {
        match inbound.message().await {
            Ok(Some(response)) => responses.push(response),
            Ok(None) => return (responses, Status::ok("")),
            Err(status) => return (responses, status),
        }
    }
}

pub async fn connect(url: &str) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
}

/// Streams mono `samples` at `sample_rate` as PCM_INT16 and collects the responses. Calls
/// `on_response` as each arrives. Ends when the engine ends the response stream; an error
/// status at the end is kept in the report with everything received before it.
pub async fn stream_audio(
    channel: Channel,
    samples: &[f32],
    sample_rate: u32,
    options: &StreamOptions,
    mut on_response: impl FnMut(&StreamingRecognizeResponse),
) -> Result<StreamReport, Status> {
    let chunk_samples =
        ((options.chunk.as_secs_f64() * f64::from(sample_rate)).round() as usize).max(1);
    let silence =
        vec![0.0f32; (options.trailing_silence.as_secs_f64() * f64::from(sample_rate)) as usize];
    let audio: Vec<f32> = samples.iter().copied().chain(silence).collect();
    let started_at = Instant::now();
    let chunks_sent = Arc::new(Mutex::new(Vec::new()));
    let finished_sending = Arc::new(Mutex::new(None));
    let (sender, receiver) = mpsc::channel(4);

    let first = StreamingRecognizeRequest {
        recognition_config: options.recognition_config.clone(),
        ..first_request(&options.session_id, sample_rate)
    };
    let pace = options.pace;
    let sender_log = chunks_sent.clone();
    let sender_done = finished_sending.clone();
    let feeder = tokio::spawn(async move {
        if sender.send(first).await.is_err() {
            return;
        }
        let mut sent_samples = 0usize;
        for chunk in audio.chunks(chunk_samples) {
            sent_samples += chunk.len();
            let audio_end = Duration::from_secs_f64(sent_samples as f64 / f64::from(sample_rate));
            if let Some(pace) = pace {
                // A chunk can be sent once the speaker has finished saying it.
                tokio::time::sleep_until((started_at + audio_end.div_f64(pace)).into()).await;
            }
            let request = StreamingRecognizeRequest {
                audio_content: pcm::encode_pcm16(chunk),
                ..Default::default()
            };
            if sender.send(request).await.is_err() {
                return;
            }
            sender_log
                .lock()
                .expect("no panics while holding the lock")
                .push((audio_end, Instant::now()));
        }
        *sender_done
            .lock()
            .expect("no panics while holding the lock") = Some(Instant::now());
    });

    let mut client = SpeechToTextClient::new(channel);
    let mut inbound = client
        .streaming_recognize(ReceiverStream::new(receiver))
        .await?
        .into_inner();
    let mut responses = Vec::new();
    let outcome = loop {
        match inbound.message().await {
            Ok(Some(response)) => {
                on_response(&response);
                responses.push(TimedResponse {
                    response,
                    received_at: Instant::now(),
                });
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(status),
        }
    };
    feeder.abort();
    let chunks_sent = std::mem::take(&mut *chunks_sent.lock().expect("feeder has stopped"));
    let finished_sending_at = *finished_sending.lock().expect("feeder has stopped");
    Ok(StreamReport {
        responses,
        chunks_sent,
        started_at,
        finished_sending_at,
        error: outcome.err(),
    })
}
