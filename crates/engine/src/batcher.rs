//! Dynamic batching: windows that are ready from all streams are gathered into one model call,
//! up to `max_batch` of them or whatever is ready once the oldest has waited `max_wait`.
//!
//! The recognizer lives on one dedicated OS thread, off the async reactor. Each stream has at
//! most one window in flight (the session enforces it), so the queue is bounded by the number of
//! admitted sessions. Finals go before partials. A window whose stream has gone holds no place:
//! it is dropped as soon as anyone looks at the queue (the next submit or the next batch), so
//! streams that come and go cannot fill it with dead work.
//!
//! If the thread dies (the model panics, or the thread ends while streams may still submit),
//! [`RecognizerFailure`] says so and why: the engine then stops serving rather than pretend.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use earshot_model::{RecognitionRequest, Recognizer, Transcript};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

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

/// The queue between the streams and the recognizer thread. A lock, not a channel, so that a
/// submit can drop the jobs of streams that have gone before it counts the places left. The
/// lock is only ever held to move jobs in or out, never across inference.
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when a job arrives or the last handle goes.
    changed: Condvar,
    capacity: usize,
    failure: RecognizerFailure,
}

#[derive(Default)]
struct QueueState {
    ready: ReadyQueue,
    /// Every handle is gone: the thread decodes what is left and stops.
    closed: bool,
    /// The thread has stopped: submits fail at once.
    stopped: bool,
}

impl Queue {
    fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            changed: Condvar::new(),
            capacity: capacity.max(1),
            failure: RecognizerFailure::default(),
        }
    }

    /// Nothing panics while holding the lock, but a poisoned queue is still a valid queue.
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The thread is gone: refuse new work, let waiting streams see their reply dropped, and
    /// (unless it ended because nobody needs it any more) report why.
    fn stop(&self, failure: Option<String>) {
        let abandoned = {
            let mut state = self.lock();
            state.stopped = true;
            std::mem::take(&mut state.ready)
        };
        drop(abandoned);
        if let Some(reason) = failure {
            tracing::error!(reason = %reason, "the recognizer thread died");
            self.failure.set(reason);
        }
    }
}

/// The submitting side; when the last handle is dropped the thread drains and stops.
struct Submitter {
    queue: Arc<Queue>,
}

impl Drop for Submitter {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.changed.notify_all();
    }
}

/// Cheap to clone; submitting never blocks.
#[derive(Clone)]
pub struct BatcherHandle {
    submitter: Arc<Submitter>,
    metrics: EngineMetrics,
}

/// Set once if the recognizer thread dies; cheap to clone, every clone sees the same failure.
#[derive(Clone, Default)]
pub struct RecognizerFailure {
    token: CancellationToken,
    reason: Arc<OnceLock<String>>,
}

impl RecognizerFailure {
    fn set(&self, reason: String) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Why the recognizer died, once it has.
    pub fn reason(&self) -> Option<String> {
        self.token
            .is_cancelled()
            .then(|| self.reason.get().cloned().unwrap_or_default())
    }

    /// Resolves with the reason when the recognizer dies (at once if it already has).
    pub async fn wait(&self) -> String {
        self.token.cancelled().await;
        self.reason.get().cloned().unwrap_or_default()
    }
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
        let queue = &self.submitter.queue;
        let (reply, receiver) = oneshot::channel();
        {
            let mut state = queue.lock();
            if state.stopped {
                return Err(SubmitError::Stopped);
            }
            // Only jobs someone still waits for count against the bound.
            state.ready.drop_abandoned(&self.metrics);
            if state.ready.len() >= queue.capacity {
                return Err(SubmitError::QueueFull);
            }
            state.ready.push(Job {
                request,
                priority,
                reply,
                enqueued: Instant::now(),
            });
        }
        queue.changed.notify_one();
        Ok(receiver)
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// Says if and why the recognizer thread died.
    pub fn failure(&self) -> &RecognizerFailure {
        &self.submitter.queue.failure
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
    /// Live jobs the queue holds; the engine sizes it to its session limit (one window per
    /// stream). Jobs of streams that have gone do not count.
    pub capacity: usize,
}

/// Starts the recognizer thread. It stops when every handle has been dropped, or when the
/// model panics (see [`BatcherHandle::failure`]).
pub fn spawn_batcher(
    recognizer: Box<dyn Recognizer>,
    policy: BatchPolicy,
    metrics: EngineMetrics,
) -> std::io::Result<(BatcherHandle, std::thread::JoinHandle<()>)> {
    let queue = Arc::new(Queue::new(policy.capacity));
    let thread_queue = queue.clone();
    let thread_metrics = metrics.clone();
    let thread = std::thread::Builder::new()
        .name("recognizer".into())
        .spawn(move || run(recognizer, &thread_queue, policy, &thread_metrics))?;
    let submitter = Arc::new(Submitter { queue });
    Ok((BatcherHandle { submitter, metrics }, thread))
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

    /// Drops the jobs whose stream stopped waiting (it dropped its reply receiver).
    fn drop_abandoned(&mut self, metrics: &EngineMetrics) {
        for queue in [&mut self.finals, &mut self.partials] {
            let before = queue.len();
            queue.retain(|job| !job.reply.is_closed());
            metrics
                .windows_skipped
                .inc_by((before - queue.len()) as u64);
        }
    }

    /// Takes up to `max_batch` jobs, finals first, of similar length (see
    /// [`MIN_LENGTH_RATIO`]); drops jobs whose stream stopped waiting. The oldest final (or
    /// else the oldest partial) always goes.
    fn take_batch(&mut self, max_batch: usize, metrics: &EngineMetrics) -> Vec<Job> {
        self.drop_abandoned(metrics);
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

/// Marks the queue stopped however the thread ends; an end that `run` did not choose (a
/// panic outside the model call) is a failure.
struct ThreadExit<'a> {
    queue: &'a Queue,
    failure: Option<String>,
    chosen: bool,
}

impl Drop for ThreadExit<'_> {
    fn drop(&mut self) {
        let failure = if self.chosen {
            self.failure.take()
        } else if std::thread::panicking() {
            Some("the recognizer thread panicked".to_string())
        } else {
            Some("the recognizer thread exited".to_string())
        };
        self.queue.stop(failure);
    }
}

fn run(
    mut recognizer: Box<dyn Recognizer>,
    queue: &Queue,
    policy: BatchPolicy,
    metrics: &EngineMetrics,
) {
    let mut exit = ThreadExit {
        queue,
        failure: None,
        chosen: false,
    };
    while let Some(batch) = next_batch(queue, policy, metrics) {
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
        // A panicking model leaves the recognizer in an unknown state: stop rather than decode
        // anything more with it. The batch's streams see their reply dropped, like every other
        // stream once the failure is reported; the reason goes to the log, not to clients.
        let call = AssertUnwindSafe(|| recognizer.recognize_batch(&requests));
        let results = match std::panic::catch_unwind(call) {
            Ok(results) => results,
            Err(panic) => {
                drop(batch);
                exit.failure = Some(format!("the model panicked: {}", panic_message(&*panic)));
                break;
            }
        };
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
    exit.chosen = true;
}

/// The next batch to decode: waits for a job, then up to `max_wait` after the oldest for a
/// fuller batch (which may already be over after a long model call). `None` once every handle
/// is gone and nothing is left.
fn next_batch(queue: &Queue, policy: BatchPolicy, metrics: &EngineMetrics) -> Option<Vec<Job>> {
    let mut state = queue.lock();
    loop {
        state.ready.drop_abandoned(metrics);
        let Some(oldest) = state.ready.oldest() else {
            if state.closed {
                return None;
            }
            state = queue
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        let useful_batch = policy
            .max_batch
            .min(metrics.streams_active.get().max(1) as usize);
        let deadline = oldest + policy.max_wait;
        while state.ready.len() < useful_batch && !state.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = queue
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let batch = state.ready.take_batch(policy.max_batch, metrics);
        if !batch.is_empty() {
            return Some(batch);
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "a panic without a message"
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

    /// A handle on a queue whose thread has not started yet (see [`start`]).
    fn recording(
        max_batch: usize,
        max_wait: Duration,
    ) -> (BatcherHandle, Recorded, Arc<Queue>, BatchPolicy) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let policy = BatchPolicy {
            max_batch,
            max_wait,
            capacity: 16,
        };
        let queue = Arc::new(Queue::new(policy.capacity));
        let handle = BatcherHandle {
            submitter: Arc::new(Submitter {
                queue: queue.clone(),
            }),
            metrics: EngineMetrics::default(),
        };
        (handle, batches, queue, policy)
    }

    fn start(
        handle: &BatcherHandle,
        batches: &Recorded,
        queue: Arc<Queue>,
        policy: BatchPolicy,
    ) -> std::thread::JoinHandle<()> {
        let recognizer = Box::new(RecordingRecognizer {
            batches: batches.clone(),
        });
        start_with(recognizer, handle, queue, policy)
    }

    fn start_with(
        recognizer: Box<dyn Recognizer>,
        handle: &BatcherHandle,
        queue: Arc<Queue>,
        policy: BatchPolicy,
    ) -> std::thread::JoinHandle<()> {
        let metrics = handle.metrics.clone();
        std::thread::spawn(move || run(recognizer, &queue, policy, &metrics))
    }

    #[test]
    fn gathers_ready_windows_into_one_call_up_to_max_batch() {
        let (handle, batches, queue, policy) = recording(4, Duration::from_millis(50));
        let replies: Vec<_> = (0..6)
            .map(|id| {
                handle
                    .submit(request(id as f32), Priority::Partial)
                    .unwrap()
            })
            .collect();
        let thread = start(&handle, &batches, queue, policy);
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
        let (handle, batches, queue, policy) = recording(2, Duration::from_millis(50));
        let replies = vec![
            handle.submit(request(0.0), Priority::Partial).unwrap(),
            handle.submit(request(1.0), Priority::Partial).unwrap(),
            handle.submit(request(2.0), Priority::Final).unwrap(),
        ];
        let thread = start(&handle, &batches, queue, policy);
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
        let (handle, batches, queue, policy) = recording(2, Duration::from_secs(600));
        let _streams = [handle.register_stream(), handle.register_stream()];
        let thread = start(&handle, &batches, queue, policy);
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
        let (handle, batches, queue, policy) = recording(4, Duration::from_secs(600));
        let stream = handle.register_stream();
        let thread = start(&handle, &batches, queue, policy);
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
        let (handle, batches, queue, policy) = recording(4, Duration::from_secs(600));
        let _streams: Vec<_> = (0..3).map(|_| handle.register_stream()).collect();
        let thread = start(&handle, &batches, queue, policy);
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
        let (handle, batches, queue, policy) = recording(4, Duration::from_millis(10));
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
        let thread = start(&handle, &batches, queue, policy);
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
        let (handle, batches, queue, policy) = recording(4, Duration::from_millis(10));
        let abandoned = handle.submit(request(0.0), Priority::Partial).unwrap();
        drop(abandoned);
        let kept = handle.submit(request(1.0), Priority::Partial).unwrap();
        let metrics = handle.metrics.clone();
        let thread = start(&handle, &batches, queue, policy);
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
        let (handle, _batches, _queue, _policy) = recording(1, Duration::from_millis(1));
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

    #[test]
    fn windows_of_streams_that_have_gone_hold_no_place_in_the_queue() {
        let (handle, batches, queue, policy) = recording(4, Duration::from_millis(10));
        // Many more streams come and go, each leaving a window behind, than the queue holds
        // (as during one long model call).
        for id in 0..1_000 {
            let abandoned = handle.submit(request(id as f32), Priority::Final).unwrap();
            drop(abandoned);
        }
        assert!(
            queue.lock().ready.len() <= 1,
            "dead work is dropped at once"
        );
        // Every place is still there for live streams, and no more.
        let live: Vec<_> = (0..policy.capacity)
            .map(|id| {
                handle
                    .submit(request(1_000.0 + id as f32), Priority::Partial)
                    .unwrap()
            })
            .collect();
        assert!(matches!(
            handle.submit(request(99.0), Priority::Final),
            Err(SubmitError::QueueFull)
        ));
        let metrics = handle.metrics.clone();
        let thread = start(&handle, &batches, queue, policy);
        for reply in live {
            reply.blocking_recv().unwrap().unwrap();
        }
        drop(handle);
        thread.join().unwrap();
        let decoded: Vec<f32> = batches.lock().unwrap().concat();
        assert_eq!(decoded.len(), policy.capacity);
        assert!(decoded.iter().all(|&id| id >= 1_000.0), "{decoded:?}");
        assert_eq!(metrics.windows_skipped.get(), 1_000);
    }

    /// Panics in every model call.
    struct PanickingRecognizer;

    impl Recognizer for PanickingRecognizer {
        fn n_mels(&self) -> usize {
            1
        }
        fn recognize_batch(
            &mut self,
            _batch: &[RecognitionRequest],
        ) -> Result<Vec<Transcript>, ModelError> {
            panic!("the model broke down")
        }
    }

    #[test]
    fn a_panicking_model_stops_the_recognizer_and_says_why() {
        let (handle, _batches, queue, policy) = recording(1, Duration::from_millis(1));
        let first = handle.submit(request(0.0), Priority::Final).unwrap();
        let queued = handle.submit(request(1.0), Priority::Final).unwrap();
        assert_eq!(handle.failure().reason(), None);
        let thread = start_with(Box::new(PanickingRecognizer), &handle, queue, policy);
        // The panic is caught: the thread ends in order.
        thread.join().unwrap();
        // Neither the window in the model call nor the one behind it gets an answer...
        assert!(first.blocking_recv().is_err());
        assert!(queued.blocking_recv().is_err());
        // ...nothing more is accepted, and the failure says why.
        assert!(matches!(
            handle.submit(request(2.0), Priority::Final),
            Err(SubmitError::Stopped)
        ));
        let reason = handle.failure().reason().expect("a failure");
        assert!(reason.contains("the model broke down"), "{reason}");
    }

    #[test]
    fn a_recognizer_thread_that_ends_on_its_own_is_a_failure() {
        let queue = Queue::new(4);
        drop(ThreadExit {
            queue: &queue,
            failure: None,
            chosen: false,
        });
        assert!(queue.lock().stopped);
        let reason = queue.failure.reason().expect("a failure");
        assert!(reason.contains("exited"), "{reason}");
    }

    #[test]
    fn a_recognizer_that_is_no_longer_needed_stops_without_a_failure() {
        let (handle, batches, queue, policy) = recording(1, Duration::from_millis(1));
        let failure = handle.failure().clone();
        let thread = start(&handle, &batches, queue, policy);
        drop(handle);
        thread.join().unwrap();
        assert_eq!(failure.reason(), None);
    }
}
