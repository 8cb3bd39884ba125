//! Dynamic batching: windows that are ready from all streams are gathered into one model call,
//! up to `max_batch` of them or whatever is ready once the oldest has waited `max_wait`.
//!
//! The recognizer lives on one dedicated OS thread, off the async reactor. Each stream has at
//! most one window in flight (the session enforces it), so the queue is bounded by the number of
//! admitted sessions. Finals go before partials; a window whose stream has gone is skipped.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use earshot_model::{RecognitionRequest, Recognizer, Transcript};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

use crate::metrics::{EngineMetrics, WindowLabel};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Closes an utterance: the user is waiting for it, and it is never dropped.
    Final,
    /// Interim text: may wait behind finals.
    Partial,
}

pub type JobResult = Result<Transcript, String>;

struct Job {
    request: RecognitionRequest,
    priority: Priority,
    reply: oneshot::Sender<JobResult>,
    enqueued: Instant,
}

/// Cheap to clone; submitting never blocks.
#[derive(Clone)]
pub struct BatcherHandle {
    sender: mpsc::SyncSender<Job>,
    metrics: EngineMetrics,
}

/// Counts a stream as one that may submit windows, while it lives.
pub struct ActiveStream {
    streams_active: Gauge,
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.streams_active.dec();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the recognizer thread has stopped")]
    Stopped,
    #[error("the recognizer queue is full")]
    QueueFull,
}

impl BatcherHandle {
    pub fn submit(
        &self,
        request: RecognitionRequest,
        priority: Priority,
    ) -> Result<oneshot::Receiver<JobResult>, SubmitError> {
        let (reply, receiver) = oneshot::channel();
        let job = Job {
            request,
            priority,
            reply,
            enqueued: Instant::now(),
        };
        match self.sender.try_send(job) {
            Ok(()) => Ok(receiver),
            Err(mpsc::TrySendError::Full(_)) => Err(SubmitError::QueueFull),
            Err(mpsc::TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// Registers a stream: the batcher never waits for more windows than there are streams
    /// to send them (each has at most one in flight), so a lone stream is never delayed.
    pub fn register_stream(&self) -> ActiveStream {
        self.metrics.streams_active.inc();
        ActiveStream {
            streams_active: self.metrics.streams_active.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Queue capacity; the engine sizes it to its session limit (one window per stream).
    pub capacity: usize,
}

/// Starts the recognizer thread. It stops when every handle has been dropped.
pub fn spawn_batcher(
    recognizer: Box<dyn Recognizer>,
    policy: BatchPolicy,
    metrics: EngineMetrics,
) -> std::io::Result<(BatcherHandle, std::thread::JoinHandle<()>)> {
    let (sender, receiver) = mpsc::sync_channel(policy.capacity.max(1));
    let thread_metrics = metrics.clone();
    let thread = std::thread::Builder::new()
        .name("recognizer".into())
        .spawn(move || run(recognizer, receiver, policy, &thread_metrics))?;
    Ok((BatcherHandle { sender, metrics }, thread))
}

/// Ready windows, finals first, each class in arrival order.
#[derive(Default)]
struct ReadyQueue {
    finals: VecDeque<Job>,
    partials: VecDeque<Job>,
}

impl ReadyQueue {
    fn push(&mut self, job: Job) {
        match job.priority {
            Priority::Final => self.finals.push_back(job),
            Priority::Partial => self.partials.push_back(job),
        }
    }

    fn len(&self) -> usize {
        self.finals.len() + self.partials.len()
    }

    fn oldest(&self) -> Option<Instant> {
        let finals = self.finals.front().map(|job| job.enqueued);
        let partials = self.partials.front().map(|job| job.enqueued);
        finals.into_iter().chain(partials).min()
    }

    /// Takes up to `max_batch` jobs, finals first, of similar length (see
    /// [`MIN_LENGTH_RATIO`]); drops jobs whose stream stopped waiting. The oldest final (or
    /// else the oldest partial) always goes.
    fn take_batch(&mut self, max_batch: usize, metrics: &EngineMetrics) -> Vec<Job> {
        for queue in [&mut self.finals, &mut self.partials] {
            let before = queue.len();
            queue.retain(|job| !job.reply.is_closed());
            metrics
                .windows_skipped
                .inc_by((before - queue.len()) as u64);
        }
        let Some(first) = self
            .finals
            .pop_front()
            .or_else(|| self.partials.pop_front())
        else {
            return Vec::new();
        };
        let anchor = first.request.raw_log_mel.len();
        let mut batch = Vec::with_capacity(max_batch);
        batch.push(first);
        for queue in [&mut self.finals, &mut self.partials] {
            let mut idx = 0;
            while idx < queue.len() && batch.len() < max_batch {
                if similar_length(anchor, queue[idx].request.raw_log_mel.len()) {
                    batch.extend(queue.remove(idx));
                } else {
                    idx += 1;
                }
            }
        }
        batch
    }
}

/// Windows in one model call are padded to the longest. On a CPU that padding costs as much as
/// audio, so a window joins a batch only if it is at least this share of the other's length.
const MIN_LENGTH_RATIO: f64 = 0.75;

fn similar_length(a: usize, b: usize) -> bool {
    let (short, long) = if a < b { (a, b) } else { (b, a) };
    short as f64 >= MIN_LENGTH_RATIO * long as f64
}

fn run(
    mut recognizer: Box<dyn Recognizer>,
    receiver: mpsc::Receiver<Job>,
    policy: BatchPolicy,
    metrics: &EngineMetrics,
) {
    let mut queue = ReadyQueue::default();
    loop {
        if queue.len() == 0 {
            match receiver.recv() {
                Ok(job) => queue.push(job),
                Err(mpsc::RecvError) => return,
            }
        }
        let useful_batch = policy
            .max_batch
            .min(metrics.streams_active.get().max(1) as usize);
        gather(&receiver, &mut queue, useful_batch, policy.max_wait);
        let batch = queue.take_batch(policy.max_batch, metrics);
        if batch.is_empty() {
            continue;
        }
        let requests: Vec<RecognitionRequest> =
            batch.iter().map(|job| job.request.clone()).collect();
        let started = Instant::now();
        for job in &batch {
            let waited = started.saturating_duration_since(job.enqueued);
            metrics.queue_wait_seconds.observe(waited.as_secs_f64());
            metrics
                .windows
                .get_or_create(&WindowLabel::of(job.priority))
                .inc();
        }
        let results = recognizer.recognize_batch(&requests);
        let elapsed = started.elapsed();
        metrics.batches.inc();
        metrics.batch_size.observe(batch.len() as f64);
        metrics.inference_seconds.observe(elapsed.as_secs_f64());
        metrics.model_busy_seconds.inc_by(elapsed.as_secs_f64());
        tracing::debug!(
            batch_size = batch.len(),
            elapsed_ms = elapsed.as_millis() as u64,
            "decoded batch"
        );
        match results {
            Ok(transcripts) if transcripts.len() == batch.len() => {
                for (job, transcript) in batch.into_iter().zip(transcripts) {
                    // The stream may have gone meanwhile; nothing to do then.
                    let _ = job.reply.send(Ok(transcript));
                }
            }
            Ok(transcripts) => {
                let message = format!(
                    "recognizer returned {} results for {} windows",
                    transcripts.len(),
                    batch.len()
                );
                tracing::error!("{message}");
                for job in batch {
                    let _ = job.reply.send(Err(message.clone()));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "model call failed");
                for job in batch {
                    let _ = job.reply.send(Err(err.to_string()));
                }
            }
        }
    }
}

/// Adds to `queue` whatever arrives until it holds `batch_size` jobs or its oldest job has
/// waited `max_wait` (which may already be the case after a long model call).
fn gather(
    receiver: &mpsc::Receiver<Job>,
    queue: &mut ReadyQueue,
    batch_size: usize,
    max_wait: Duration,
) {
    while let Ok(job) = receiver.try_recv() {
        queue.push(job);
    }
    let Some(oldest) = queue.oldest() else {
        return;
    };
    let deadline = oldest + max_wait;
    while queue.len() < batch_size {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match receiver.recv_timeout(deadline - now) {
            Ok(job) => queue.push(job),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use earshot_model::{ModelError, WindowKind};

    /// Records each batch (as the first sample of each window) and answers with that number.
    struct RecordingRecognizer {
        batches: Arc<Mutex<Vec<Vec<f32>>>>,
    }

    impl Recognizer for RecordingRecognizer {
        fn n_mels(&self) -> usize {
            1
        }
        fn recognize_batch(
            &mut self,
            batch: &[RecognitionRequest],
        ) -> Result<Vec<Transcript>, ModelError> {
            let ids: Vec<f32> = batch.iter().map(|r| r.raw_log_mel[0]).collect();
            self.batches.lock().unwrap().push(ids.clone());
            Ok(ids
                .iter()
                .map(|id| Transcript {
                    text: format!("window {id}"),
                    ..Default::default()
                })
                .collect())
        }
    }

    fn request(id: f32) -> RecognitionRequest {
        RecognitionRequest::new(vec![id], WindowKind::Partial)
    }

    type Recorded = Arc<Mutex<Vec<Vec<f32>>>>;

    fn recording(
        max_batch: usize,
        max_wait: Duration,
    ) -> (BatcherHandle, Recorded, mpsc::Receiver<Job>, BatchPolicy) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let policy = BatchPolicy {
            max_batch,
            max_wait,
            capacity: 16,
        };
        let (sender, receiver) = mpsc::sync_channel(policy.capacity);
        let handle = BatcherHandle {
            sender,
            metrics: EngineMetrics::default(),
        };
        (handle, batches, receiver, policy)
    }

    fn start(
        handle: &BatcherHandle,
        batches: &Recorded,
        receiver: mpsc::Receiver<Job>,
        policy: BatchPolicy,
    ) -> std::thread::JoinHandle<()> {
        let recognizer = Box::new(RecordingRecognizer {
            batches: batches.clone(),
        });
        let metrics = handle.metrics.clone();
        std::thread::spawn(move || run(recognizer, receiver, policy, &metrics))
    }

    #[test]
    fn gathers_ready_windows_into_one_call_up_to_max_batch() {
        let (handle, batches, receiver, policy) = recording(4, Duration::from_millis(50));
        let replies: Vec<_> = (0..6)
            .map(|id| {
                handle
                    .submit(request(id as f32), Priority::Partial)
                    .unwrap()
            })
            .collect();
        let thread = start(&handle, &batches, receiver, policy);
        for (id, reply) in replies.into_iter().enumerate() {
            let transcript = reply.blocking_recv().unwrap().unwrap();
            assert_eq!(transcript.text, format!("window {id}"));
        }
        drop(handle);
        thread.join().unwrap();
        let batches = batches.lock().unwrap();
        assert_eq!(*batches, vec![vec![0.0, 1.0, 2.0, 3.0], vec![4.0, 5.0]]);
    }

    #[test]
    fn finals_go_before_partials() {
        let (handle, batches, receiver, policy) = recording(2, Duration::from_millis(50));
        let replies = vec![
            handle.submit(request(0.0), Priority::Partial).unwrap(),
            handle.submit(request(1.0), Priority::Partial).unwrap(),
            handle.submit(request(2.0), Priority::Final).unwrap(),
        ];
        let thread = start(&handle, &batches, receiver, policy);
        for reply in replies {
            reply.blocking_recv().unwrap().unwrap();
        }
        drop(handle);
        thread.join().unwrap();
        assert_eq!(batches.lock().unwrap()[0], vec![2.0, 0.0]);
    }

    #[test]
    fn a_full_batch_does_not_wait_for_max_wait() {
        // With a ten-minute max_wait, a batch that is full must still run at once.
        let (handle, batches, receiver, policy) = recording(2, Duration::from_secs(600));
        let _streams = [handle.register_stream(), handle.register_stream()];
        let thread = start(&handle, &batches, receiver, policy);
        let first = handle.submit(request(0.0), Priority::Partial).unwrap();
        let second = handle.submit(request(1.0), Priority::Partial).unwrap();
        first.blocking_recv().unwrap().unwrap();
        second.blocking_recv().unwrap().unwrap();
        drop(handle);
        thread.join().unwrap();
        assert_eq!(batches.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_lone_stream_is_not_kept_waiting_for_a_fuller_batch() {
        // One stream can never fill a batch of four: its window must not wait out max_wait.
        let (handle, batches, receiver, policy) = recording(4, Duration::from_secs(600));
        let stream = handle.register_stream();
        let thread = start(&handle, &batches, receiver, policy);
        let started = Instant::now();
        let reply = handle.submit(request(0.0), Priority::Partial).unwrap();
        reply.blocking_recv().unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(300));
        drop(stream);
        drop(handle);
        thread.join().unwrap();
    }

    #[test]
    fn waits_for_other_active_streams_up_to_max_batch() {
        let (handle, batches, receiver, policy) = recording(4, Duration::from_secs(600));
        let _streams: Vec<_> = (0..3).map(|_| handle.register_stream()).collect();
        let thread = start(&handle, &batches, receiver, policy);
        let replies: Vec<_> = (0..3)
            .map(|id| {
                std::thread::sleep(Duration::from_millis(20));
                handle
                    .submit(request(id as f32), Priority::Partial)
                    .unwrap()
            })
            .collect();
        for reply in replies {
            reply.blocking_recv().unwrap().unwrap();
        }
        drop(handle);
        thread.join().unwrap();
        assert_eq!(*batches.lock().unwrap(), vec![vec![0.0, 1.0, 2.0]]);
    }

    #[test]
    fn batches_windows_of_similar_length_together() {
        let (handle, batches, receiver, policy) = recording(4, Duration::from_millis(10));
        let long_window = RecognitionRequest::new(vec![1.0; 400], WindowKind::Partial);
        let replies = vec![
            handle
                .submit(request_of_len(0.0, 100), Priority::Partial)
                .unwrap(),
            handle.submit(long_window, Priority::Partial).unwrap(),
            handle
                .submit(request_of_len(2.0, 110), Priority::Partial)
                .unwrap(),
        ];
        let thread = start(&handle, &batches, receiver, policy);
        for reply in replies {
            reply.blocking_recv().unwrap().unwrap();
        }
        drop(handle);
        thread.join().unwrap();
        assert_eq!(*batches.lock().unwrap(), vec![vec![0.0, 2.0], vec![1.0]]);
    }

    fn request_of_len(id: f32, len: usize) -> RecognitionRequest {
        let mut values = vec![0.0; len];
        values[0] = id;
        RecognitionRequest::new(values, WindowKind::Partial)
    }

    #[test]
    fn skips_windows_whose_stream_has_gone() {
        let (handle, batches, receiver, policy) = recording(4, Duration::from_millis(10));
        let abandoned = handle.submit(request(0.0), Priority::Partial).unwrap();
        drop(abandoned);
        let kept = handle.submit(request(1.0), Priority::Partial).unwrap();
        let metrics = handle.metrics.clone();
        let thread = start(&handle, &batches, receiver, policy);
        kept.blocking_recv().unwrap().unwrap();
        drop(handle);
        thread.join().unwrap();
        assert_eq!(*batches.lock().unwrap(), vec![vec![1.0]]);
        assert_eq!(metrics.windows_skipped.get(), 1);
        assert_eq!(metrics.windows_decoded(), 1);
        assert_eq!(metrics.batches.get(), 1);
    }

    #[test]
    fn refuses_when_the_queue_is_full() {
        let (handle, _batches, _receiver, _policy) = recording(1, Duration::from_millis(1));
        let _held: Vec<_> = (0..16)
            .map(|id| {
                handle
                    .submit(request(id as f32), Priority::Partial)
                    .unwrap()
            })
            .collect();
        assert!(matches!(
            handle.submit(request(99.0), Priority::Final),
            Err(SubmitError::QueueFull)
        ));
    }
}
