//! A session's side of an engine stream: the [`EngineConnector`] seam (open a stream on some
//! engine, or say why none took it), the audio queue whose unsent bytes drive flow control, and
//! the real connector over the engine pool's gRPC channels.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use earshot_proto::speech_to_text_client::SpeechToTextClient;
use earshot_proto::{StreamingRecognizeRequest, StreamingRecognizeResponse};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::Code;

use crate::engines::EnginePool;

/// Frames queued for the engine, whatever their size; bytes are bounded separately (by
/// `--max-buffer-bytes`). When it is full the session stops reading its socket.
pub const AUDIO_QUEUE_FRAMES: usize = 1024;

/// The engine's responses on one stream.
pub type ResponseStream = BoxStream<'static, Result<StreamingRecognizeResponse, tonic::Status>>;

/// Why no engine took a stream; `detail` lists each engine's refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Every engine that is up is full: try again later.
    #[error("every engine that is up is at capacity; try again later ({detail})")]
    Overloaded { detail: String },
    /// No engine could be reached or every one failed.
    #[error("no engine accepted the stream ({detail})")]
    Unavailable { detail: String },
}

/// An open engine stream.
pub struct EngineLink {
    pub audio: AudioQueue,
    pub responses: ResponseStream,
    /// Held as long as the stream is open (it counts the session on its engine).
    pub claim: Box<dyn Send + Sync>,
}

/// Opens engine streams for sessions. The gateway's is [`GrpcConnector`]; tests use a fake.
pub trait EngineConnector: Send + Sync {
    /// Opens a stream whose first request is `first` (it carries the audio configuration).
    fn open(
        &self,
        first: StreamingRecognizeRequest,
    ) -> BoxFuture<'_, Result<EngineLink, OpenError>>;
}

/// Audio the session has queued for the engine, counted in bytes until the transport takes it.
pub struct AudioQueue {
    sender: Option<mpsc::Sender<StreamingRecognizeRequest>>,
    buffered: Arc<AtomicUsize>,
    changed: watch::Receiver<()>,
    /// The transport side is gone: no more changes will come.
    changes_ended: bool,
}

/// The transport's side of an [`AudioQueue`]: yields the requests, and takes their bytes off
/// the queue's count as it does.
pub struct QueuedRequests {
    receiver: mpsc::Receiver<StreamingRecognizeRequest>,
    buffered: Arc<AtomicUsize>,
    changed: watch::Sender<()>,
}

/// A queue of `frames` requests, its two ends.
pub fn audio_queue(frames: usize) -> (AudioQueue, QueuedRequests) {
    let (sender, receiver) = mpsc::channel(frames);
    let buffered = Arc::new(AtomicUsize::new(0));
    let (changed_sender, changed) = watch::channel(());
    (
        AudioQueue {
            sender: Some(sender),
            buffered: buffered.clone(),
            changed,
            changes_ended: false,
        },
        QueuedRequests {
            receiver,
            buffered,
            changed: changed_sender,
        },
    )
}

/// The queue had no room; the request is handed back.
#[derive(Debug)]
pub struct QueueFull;

impl AudioQueue {
    /// Queues `request` without waiting.
    pub fn try_push(&self, request: StreamingRecognizeRequest) -> Result<(), QueueFull> {
        let Some(sender) = &self.sender else {
            return Err(QueueFull);
        };
        let n_bytes = request.audio_content.len();
        self.buffered.fetch_add(n_bytes, Ordering::Relaxed);
        if sender.try_send(request).is_err() {
            self.buffered.fetch_sub(n_bytes, Ordering::Relaxed);
            return Err(QueueFull);
        }
        Ok(())
    }

    /// No room for another request: the transport is waiting for HTTP/2 flow control.
    pub fn is_full(&self) -> bool {
        self.sender
            .as_ref()
            .is_some_and(|sender| sender.capacity() == 0)
    }

    /// Audio bytes queued and not yet taken by the transport.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Ends the request stream (a half-close): the engine then sends its last finals.
    pub fn close(&mut self) {
        self.sender = None;
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_none()
    }

    /// Resolves when the transport took a request; never, once it is gone.
    pub async fn taken(&mut self) {
        if self.changes_ended {
            return std::future::pending().await;
        }
        if self.changed.changed().await.is_err() {
            self.changes_ended = true;
            std::future::pending::<()>().await;
        }
    }
}

impl Stream for QueuedRequests {
    type Item = StreamingRecognizeRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.receiver.poll_recv(cx);
        if let Poll::Ready(Some(request)) = &polled {
            self.buffered
                .fetch_sub(request.audio_content.len(), Ordering::Relaxed);
            let _ = self.changed.send(());
        }
        polled
    }
}

/// Opens streams on the least loaded engine of a pool that accepts them.
pub struct GrpcConnector {
    pub engines: Arc<EnginePool>,
}

impl EngineConnector for GrpcConnector {
    fn open(
        &self,
        first: StreamingRecognizeRequest,
    ) -> BoxFuture<'_, Result<EngineLink, OpenError>> {
        Box::pin(async move {
            let mut refusals = Vec::new();
            let mut overloaded = 0;
            for engine in self.engines.candidates() {
                let (audio, requests) = audio_queue(AUDIO_QUEUE_FRAMES);
                if audio.try_push(first.clone()).is_err() {
                    continue;
                }
                let claim = engine.claim();
                let mut client = SpeechToTextClient::new(engine.channel());
                match client.streaming_recognize(requests).await {
                    Ok(response) => {
                        tracing::debug!(engine = %engine.url, "engine stream opened");
                        return Ok(EngineLink {
                            audio,
                            responses: response.into_inner().boxed(),
                            claim: Box::new(claim),
                        });
                    }
                    Err(status) => {
                        if status.code() == Code::ResourceExhausted {
                            overloaded += 1;
                        }
                        tracing::warn!(engine = %engine.url, code = ?status.code(), message = status.message(), "engine refused a stream");
                        refusals.push(format!("{}: {}", engine.url, status.message()));
                    }
                }
            }
            let detail = refusals.join("; ");
            // Full engines (even beside dead ones) mean "try again later"; only engines that
            // are all down or failing make it an engine failure.
            if overloaded > 0 {
                Err(OpenError::Overloaded { detail })
            } else {
                Err(OpenError::Unavailable { detail })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(n_bytes: usize) -> StreamingRecognizeRequest {
        StreamingRecognizeRequest {
            audio_content: vec![0; n_bytes],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn bytes_leave_the_count_when_the_transport_takes_them() {
        let (mut queue, mut requests) = audio_queue(2);
        queue.try_push(audio(100)).unwrap();
        queue.try_push(audio(50)).unwrap();
        assert_eq!(queue.buffered_bytes(), 150);
        assert!(queue.is_full());
        assert!(queue.try_push(audio(1)).is_err());
        assert_eq!(queue.buffered_bytes(), 150, "a refused push is not counted");
        assert_eq!(requests.next().await.unwrap().audio_content.len(), 100);
        queue.taken().await;
        assert_eq!(queue.buffered_bytes(), 50);
        assert!(!queue.is_full());
        queue.close();
        assert!(queue.is_closed());
        assert_eq!(requests.next().await.unwrap().audio_content.len(), 50);
        assert!(
            requests.next().await.is_none(),
            "closing ends the request stream"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn taken_never_resolves_once_the_transport_is_gone() {
        let (mut queue, requests) = audio_queue(2);
        drop(requests);
        let waited = tokio::time::timeout(std::time::Duration::from_secs(60), queue.taken()).await;
        assert!(waited.is_err());
    }
}
