//! **Benchmark-only backend.** An engine that recognises nothing: it answers every stream on
//! the real gRPC service path with synthetic results (a partial per `chunk` of audio, a final
//! per `utterance`), at almost no cost. It exists to measure the gateway without the model
//! being the bottleneck (`earshot engine --benchmark-echo`); it is never a default and
//! `earshot serve` never uses it.

use std::time::Duration;

use earshot_audio::pcm::AudioFormat;
use earshot_proto::speech_to_text_server::{SpeechToText, SpeechToTextServer};
use earshot_proto::{
    ResponseKind, StreamingRecognizeRequest, StreamingRecognizeResponse, WordInfo,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::ServingStatus;

use crate::server::{EngineError, SERVICE_NAME, incoming};

/// What every synthetic result says.
pub const ECHO_WORD: &str = "benchmark";

#[derive(Debug, Clone, Copy)]
pub struct EchoTiming {
    /// Audio between partials.
    pub chunk: Duration,
    /// Audio per utterance (each ends with a final).
    pub utterance: Duration,
}

impl Default for EchoTiming {
    fn default() -> Self {
        Self {
            chunk: Duration::from_millis(300),
            utterance: Duration::from_secs(3),
        }
    }
}

/// One stream's position in the synthetic transcript; pure, so it is unit-tested.
#[derive(Debug)]
struct EchoStream {
    timing: EchoTiming,
    audio_ms: i64,
    utterance_start: i64,
    last_partial: i64,
    segment: i32,
    in_speech: bool,
}

impl EchoStream {
    fn new(timing: EchoTiming) -> Self {
        Self {
            timing,
            audio_ms: 0,
            utterance_start: 0,
            last_partial: 0,
            segment: 0,
            in_speech: false,
        }
    }

    /// Audio arrived: the responses it completes.
    fn audio(&mut self, ms: i64) -> Vec<StreamingRecognizeResponse> {
        let mut out = Vec::new();
        if ms <= 0 {
            return out;
        }
        if !self.in_speech {
            self.in_speech = true;
            self.utterance_start = self.audio_ms;
            self.last_partial = self.audio_ms;
            out.push(event(ResponseKind::SpeechStarted, self.audio_ms));
        }
        self.audio_ms += ms;
        let chunk = self.timing.chunk.as_millis() as i64;
        let utterance = self.timing.utterance.as_millis() as i64;
        if self.audio_ms - self.utterance_start >= utterance {
            out.extend(self.finish(false));
        } else if self.audio_ms - self.last_partial >= chunk {
            self.last_partial = self.audio_ms;
            out.push(StreamingRecognizeResponse {
                transcript: ECHO_WORD.into(),
                confidence: 0.5,
                stability: 0.5,
                start_ms: self.utterance_start,
                end_ms: self.audio_ms,
                segment_index: self.segment,
                audio_duration_ms: self.audio_ms,
                ..Default::default()
            });
        }
        out
    }

    /// Closes the current utterance with a final (an empty one when there is none).
    fn finish(&mut self, from_finalize: bool) -> Vec<StreamingRecognizeResponse> {
        let mut out = Vec::new();
        let text = if self.in_speech {
            out.push(event(ResponseKind::SpeechEnded, self.audio_ms));
            ECHO_WORD
        } else {
            ""
        };
        out.push(StreamingRecognizeResponse {
            transcript: text.into(),
            is_final: true,
            confidence: 0.5,
            start_ms: self.utterance_start,
            end_ms: self.audio_ms,
            segment_index: self.segment,
            from_finalize,
            audio_duration_ms: self.audio_ms,
            words: if text.is_empty() {
                Vec::new()
            } else {
                vec![WordInfo {
                    word: ECHO_WORD.into(),
                    start_ms: self.utterance_start,
                    end_ms: self.audio_ms,
                    confidence: 0.5,
                }]
            },
            ..Default::default()
        });
        self.segment += 1;
        self.in_speech = false;
        self.utterance_start = self.audio_ms;
        out
    }
}

fn event(kind: ResponseKind, at_ms: i64) -> StreamingRecognizeResponse {
    StreamingRecognizeResponse {
        kind: kind as i32,
        event_ms: at_ms,
        ..Default::default()
    }
}

pub struct EchoService {
    timing: EchoTiming,
}

#[tonic::async_trait]
impl SpeechToText for EchoService {
    type StreamingRecognizeStream = ReceiverStream<Result<StreamingRecognizeResponse, Status>>;

    async fn streaming_recognize(
        &self,
        request: Request<Streaming<StreamingRecognizeRequest>>,
    ) -> Result<Response<Self::StreamingRecognizeStream>, Status> {
        let mut inbound = request.into_inner();
        let (sender, receiver) = mpsc::channel(64);
        let timing = self.timing;
        tokio::spawn(async move {
            let mut stream = EchoStream::new(timing);
            let mut bytes_per_ms = None;
            loop {
                let request = match inbound.message().await {
                    Ok(Some(request)) => request,
                    Ok(None) => break,
                    Err(_) => return,
                };
                if let Some(config) = &request.audio_config {
                    match AudioFormat::from_declared(
                        config.sample_rate,
                        config.channels,
                        &config.encoding,
                    ) {
                        Ok(format) => bytes_per_ms = Some(format.bytes_per_second() / 1000),
                        Err(err) => {
                            let _ = sender
                                .send(Err(Status::invalid_argument(err.to_string())))
                                .await;
                            return;
                        }
                    }
                }
                let Some(bytes_per_ms) = bytes_per_ms.filter(|&b| b > 0) else {
                    let _ = sender
                        .send(Err(Status::invalid_argument(
                            "the first request must carry audio_config",
                        )))
                        .await;
                    return;
                };
                let mut responses =
                    stream.audio((request.audio_content.len() / bytes_per_ms) as i64);
                if request.finalize {
                    responses.extend(stream.finish(true));
                }
                for response in responses {
                    if sender.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
            for response in stream.finish(false) {
                let _ = sender.send(Ok(response)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Serves the benchmark-only echo engine on `listener` until `shutdown`.
pub async fn run_benchmark_engine(
    timing: EchoTiming,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), EngineError> {
    tracing::warn!("BENCHMARK-ONLY engine: every result is synthetic, nothing is recognised");
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // The gateway multiplexes every session onto one connection.
        .max_concurrent_streams(None)
        .add_service(health_service)
        .add_service(SpeechToTextServer::new(EchoService { timing }))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(responses: &[StreamingRecognizeResponse]) -> Vec<(&'static str, i64)> {
        responses
            .iter()
            .map(|r| {
                let kind = match ResponseKind::try_from(r.kind) {
                    Ok(ResponseKind::SpeechStarted) => "started",
                    Ok(ResponseKind::SpeechEnded) => "ended",
                    _ if r.is_final => "final",
                    _ => "partial",
                };
                let at = if r.kind == 0 { r.end_ms } else { r.event_ms };
                (kind, at)
            })
            .collect()
    }

    #[test]
    fn a_partial_per_chunk_and_a_final_per_utterance() {
        let mut stream = EchoStream::new(EchoTiming {
            chunk: Duration::from_millis(300),
            utterance: Duration::from_millis(1000),
        });
        let mut all = Vec::new();
        for _ in 0..12 {
            all.extend(stream.audio(100));
        }
        assert_eq!(
            kinds(&all),
            vec![
                ("started", 0),
                ("partial", 300),
                ("partial", 600),
                ("partial", 900),
                ("ended", 1000),
                ("final", 1000),
                ("started", 1000),
            ]
        );
        let finals: Vec<_> = all.iter().filter(|r| r.is_final).collect();
        assert_eq!(finals[0].words.len(), 1);
        assert_eq!(finals[0].segment_index, 0);
    }

    #[test]
    fn finalize_and_the_end_of_the_stream_close_the_utterance() {
        let mut stream = EchoStream::new(EchoTiming::default());
        stream.audio(200);
        let finalized = stream.finish(true);
        assert!(finalized.last().unwrap().from_finalize);
        assert_eq!(finalized.last().unwrap().transcript, ECHO_WORD);
        // Nothing heard since: an empty final.
        let empty = stream.finish(true);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].transcript.is_empty());
        assert_eq!(empty[0].segment_index, 1);
    }
}
