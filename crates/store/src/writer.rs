//! The write path that never blocks audio: a bounded queue in front of a store, drained in order by one task
//! that retries each failed write with exponential backoff until it lands.
//!
//! Overflow policy: when `capacity` operations, or `max_bytes` of them, are pending (the database has been
//! down for a while), [`StoreWriter::submit`] rejects the new operation with [`StoreWriteError::QueueFull`] and the caller reports
//! it. Nothing already accepted is ever dropped for being old or slow.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::{SegmentRecord, SessionEnd, SessionRecord, StoreError, TranscriptStore};

/// The default bound on the bytes of pending operations (see [`StoreOp::size_bytes`]).
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// The first retry waits this long; each further one waits twice as long, up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts, so writes resume within seconds of the database returning.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// An attempt that has not finished after this long counts as failed and is retried: a half-open
/// connection must not stall the queue forever. Every write is idempotent, so a late success is harmless.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// While writes keep failing, a reminder is logged this often (the first failure is logged at once).
pub const OUTAGE_REMINDER_INTERVAL: Duration = Duration::from_secs(30);

/// One write, applied to the store in submission order.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    CreateSession(SessionRecord),
    AppendSegment(SegmentRecord),
    FinishSession { id: String, end: SessionEnd },
}

impl StoreOp {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreOp::CreateSession(_) => "create_session",
            StoreOp::AppendSegment(_) => "append_segment",
            StoreOp::FinishSession { .. } => "finish_session",
        }
    }

    /// The session the write belongs to, for logs.
    pub fn session_id(&self) -> &str {
        match self {
            StoreOp::CreateSession(session) => &session.id,
            StoreOp::AppendSegment(segment) => &segment.session_id,
            StoreOp::FinishSession { id, .. } => id,
        }
    }

    /// About how much memory the operation holds while queued: its strings plus a fixed cost per
    /// record and per word.
    pub fn size_bytes(&self) -> usize {
        const RECORD: usize = 128;
        const WORD: usize = 48;
        match self {
            StoreOp::CreateSession(session) => {
                RECORD + session.id.len() + session.client_addr.len()
            }
            StoreOp::AppendSegment(segment) => {
                RECORD
                    + segment.session_id.len()
                    + segment.text.len()
                    + segment
                        .words
                        .iter()
                        .map(|word| WORD + word.word.len())
                        .sum::<usize>()
            }
            StoreOp::FinishSession { id, end } => RECORD + id.len() + end.close_reason.len(),
        }
    }

    async fn apply(&self, store: &dyn TranscriptStore) -> Result<(), StoreError> {
        match self {
            StoreOp::CreateSession(session) => store.create_session(session).await,
            StoreOp::AppendSegment(segment) => store.append_segment(segment).await,
            StoreOp::FinishSession { id, end } => store.finish_session(id, end).await,
        }
    }
}

/// Why [`StoreWriter::submit`] did not accept an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreWriteError {
    #[error("the transcript store queue is full")]
    QueueFull,
    /// The background task is gone, which only happens when the runtime is shutting down.
    #[error("the transcript store writer has stopped")]
    Stopped,
}

/// Counters since [`StoreWriter::spawn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreWriterStats {
    /// Operations the store accepted.
    pub applied: u64,
    /// Failed attempts that were (or will be) retried.
    pub retries: u64,
    /// Operations refused by `submit` because the queue was full.
    pub rejected_full: u64,
    /// Operations given up because the store answered with an error that no retry can fix (for example
    /// finishing a session whose creation was itself rejected as queue-full); each is logged at error level.
    pub discarded: u64,
    /// Operations queued or being retried.
    pub pending: usize,
    /// Their size, as [`StoreOp::size_bytes`] counts it.
    pub pending_bytes: usize,
    /// Whether the last attempt reached the store: false from a failed attempt until the next success.
    pub healthy: bool,
}

struct WriterState {
    capacity: usize,
    max_bytes: usize,
    pending_bytes: AtomicUsize,
    // A watch channel rather than an atomic so `flush` can wait for zero without polling, and so `submit`
    // can check and reserve a slot in one step.
    pending: watch::Sender<usize>,
    applied: AtomicU64,
    retries: AtomicU64,
    rejected_full: AtomicU64,
    discarded: AtomicU64,
    healthy: AtomicBool,
}

impl WriterState {
    fn release_one(&self, size_bytes: usize) {
        self.pending_bytes.fetch_sub(size_bytes, Ordering::Relaxed);
        self.pending
            .send_modify(|pending| *pending = pending.saturating_sub(1));
    }
}

/// A bounded queue in front of a [`TranscriptStore`]; cheap to clone, every clone feeds the same queue.
#[derive(Clone)]
pub struct StoreWriter {
    state: Arc<WriterState>,
    queue: mpsc::Sender<StoreOp>,
}

impl fmt::Debug for StoreWriter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("StoreWriter")
            .field("capacity", &self.state.capacity)
            .field("stats", &self.stats())
            .finish()
    }
}

impl StoreWriter {
    /// Starts the background task on the current tokio runtime (like `tokio::spawn`, it must be called
    /// inside one). A `capacity` of 0 is taken as 1.
    ///
    /// The task ends once every clone of the writer is dropped and the queue has drained.
    pub fn spawn(store: Arc<dyn TranscriptStore>, capacity: usize) -> Self {
        Self::spawn_with_limits(store, capacity, DEFAULT_QUEUE_BYTES)
    }

    /// [`StoreWriter::spawn`] with a bound on the bytes of pending operations too: one operation larger than
    /// `max_bytes` is still accepted into an empty queue.
    pub fn spawn_with_limits(
        store: Arc<dyn TranscriptStore>,
        capacity: usize,
        max_bytes: usize,
    ) -> Self {
        let capacity = capacity.max(1);
        let state = Arc::new(WriterState {
            capacity,
            max_bytes,
            pending_bytes: AtomicUsize::new(0),
            pending: watch::Sender::new(0),
            applied: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            rejected_full: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        });
        // The channel never fills first: `pending` reserves a slot before every send and counts the
        // operation being retried too, so at most `capacity` operations are ever in the channel.
        let (queue, receiver) = mpsc::channel(capacity);
        tokio::spawn(run_writer(store, receiver, Arc::clone(&state)));
        Self { state, queue }
    }

    /// Queues `op` without waiting. Fails with [`StoreWriteError::QueueFull`] when `capacity` operations
    /// or `max_bytes` are pending; the caller must report that, as the operation is not stored.
    pub fn submit(&self, op: StoreOp) -> Result<(), StoreWriteError> {
        let size_bytes = op.size_bytes();
        let before = self
            .state
            .pending_bytes
            .fetch_add(size_bytes, Ordering::Relaxed);
        if before > 0 && before + size_bytes > self.state.max_bytes {
            self.state
                .pending_bytes
                .fetch_sub(size_bytes, Ordering::Relaxed);
            self.state.rejected_full.fetch_add(1, Ordering::Relaxed);
            return Err(StoreWriteError::QueueFull);
        }
        let capacity = self.state.capacity;
        let reserved = self.state.pending.send_if_modified(|pending| {
            if *pending < capacity {
                *pending += 1;
                true
            } else {
                false
            }
        });
        if !reserved {
            self.state
                .pending_bytes
                .fetch_sub(size_bytes, Ordering::Relaxed);
            self.state.rejected_full.fetch_add(1, Ordering::Relaxed);
            return Err(StoreWriteError::QueueFull);
        }
        match self.queue.try_send(op) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.state.release_one(size_bytes);
                self.state.rejected_full.fetch_add(1, Ordering::Relaxed);
                Err(StoreWriteError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.state.release_one(size_bytes);
                Err(StoreWriteError::Stopped)
            }
        }
    }

    /// Operations queued or being retried.
    pub fn pending(&self) -> usize {
        *self.state.pending.borrow()
    }

    pub fn stats(&self) -> StoreWriterStats {
        StoreWriterStats {
            applied: self.state.applied.load(Ordering::Relaxed),
            retries: self.state.retries.load(Ordering::Relaxed),
            rejected_full: self.state.rejected_full.load(Ordering::Relaxed),
            discarded: self.state.discarded.load(Ordering::Relaxed),
            pending: self.pending(),
            pending_bytes: self.state.pending_bytes.load(Ordering::Relaxed),
            healthy: self.state.healthy.load(Ordering::Relaxed),
        }
    }

    /// Waits until every submitted operation is applied or `deadline` passes, and returns how many are
    /// still pending.
    pub async fn flush(&self, deadline: Duration) -> usize {
        let mut pending = self.state.pending.subscribe();
        // `wait_for` only fails when the sender is dropped, and `self.state` owns it.
        let _ = tokio::time::timeout(deadline, pending.wait_for(|pending| *pending == 0)).await;
        self.pending()
    }
}

async fn run_writer(
    store: Arc<dyn TranscriptStore>,
    mut receiver: mpsc::Receiver<StoreOp>,
    state: Arc<WriterState>,
) {
    while let Some(op) = receiver.recv().await {
        apply_until_done(store.as_ref(), &op, &state).await;
        state.release_one(op.size_bytes());
    }
}

/// Why one attempt failed.
enum AttemptError {
    Store(StoreError),
    TimedOut,
}

impl AttemptError {
    fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Store(error) => error.is_retryable(),
            AttemptError::TimedOut => true,
        }
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::Store(error) => error.fmt(formatter),
            AttemptError::TimedOut => {
                write!(
                    formatter,
                    "no answer from the store within {ATTEMPT_TIMEOUT:?}"
                )
            }
        }
    }
}

/// Applies `op`, retrying until it succeeds or fails in a way no retry can fix.
async fn apply_until_done(store: &dyn TranscriptStore, op: &StoreOp, state: &WriterState) {
    let mut backoff = INITIAL_BACKOFF;
    let mut outage_started: Option<Instant> = None;
    let mut last_reminder = Instant::now();
    let mut failed_attempts: u64 = 0;
    loop {
        let outcome = match tokio::time::timeout(ATTEMPT_TIMEOUT, op.apply(store)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(AttemptError::Store(error)),
            Err(_) => Err(AttemptError::TimedOut),
        };
        let error = match outcome {
            Ok(()) => {
                state.applied.fetch_add(1, Ordering::Relaxed);
                state.healthy.store(true, Ordering::Relaxed);
                if let Some(outage_started) = outage_started {
                    tracing::info!(
                        backend = store.backend(),
                        op = op.kind(),
                        session_id = op.session_id(),
                        outage_ms = outage_started.elapsed().as_millis() as u64,
                        failed_attempts,
                        "transcript store writes recovered"
                    );
                }
                return;
            }
            Err(error) => error,
        };
        if !error.is_retryable() {
            state.discarded.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                backend = store.backend(),
                op = op.kind(),
                session_id = op.session_id(),
                error = %error,
                "transcript store refused a write that no retry can fix; skipping it"
            );
            return;
        }
        failed_attempts += 1;
        state.retries.fetch_add(1, Ordering::Relaxed);
        state.healthy.store(false, Ordering::Relaxed);
        let now = Instant::now();
        match outage_started {
            None => {
                outage_started = Some(now);
                last_reminder = now;
                tracing::warn!(
                    backend = store.backend(),
                    op = op.kind(),
                    session_id = op.session_id(),
                    pending = *state.pending.borrow(),
                    error = %error,
                    "transcript store write failed; retrying with backoff until it succeeds"
                );
            }
            Some(outage_started)
                if now.duration_since(last_reminder) >= OUTAGE_REMINDER_INTERVAL =>
            {
                last_reminder = now;
                tracing::warn!(
                    backend = store.backend(),
                    op = op.kind(),
                    session_id = op.session_id(),
                    pending = *state.pending.borrow(),
                    outage_ms = now.duration_since(outage_started).as_millis() as u64,
                    failed_attempts,
                    error = %error,
                    "transcript store writes are still failing"
                );
            }
            Some(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::{ApiKeyRecord, SessionStatus, SessionWithTranscript};

    /// A store that records every write it accepts, failing on demand: `failures_left` attempts fail
    /// before the next succeeds, and while `down` is set every attempt fails.
    #[derive(Default)]
    struct FlakyStore {
        failures_left: AtomicUsize,
        down: AtomicBool,
        hang_next: AtomicBool,
        attempt_times: Mutex<Vec<Instant>>,
        applied: Mutex<Vec<String>>,
        created: Mutex<HashSet<String>>,
    }

    impl FlakyStore {
        fn failing(failures: usize) -> Arc<Self> {
            let store = Self::default();
            store.failures_left.store(failures, Ordering::SeqCst);
            Arc::new(store)
        }

        fn applied(&self) -> Vec<String> {
            self.applied.lock().unwrap().clone()
        }

        fn attempt_gaps(&self) -> Vec<Duration> {
            let times = self.attempt_times.lock().unwrap();
            times.windows(2).map(|pair| pair[1] - pair[0]).collect()
        }

        async fn attempt(&self, entry: String) -> Result<(), StoreError> {
            self.attempt_times.lock().unwrap().push(Instant::now());
            if self.hang_next.swap(false, Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let failing_once = self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                })
                .is_ok();
            if failing_once || self.down.load(Ordering::SeqCst) {
                let busy = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY);
                return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                    busy, None,
                )));
            }
            self.applied.lock().unwrap().push(entry);
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl TranscriptStore for FlakyStore {
        fn backend(&self) -> &'static str {
            "flaky"
        }

        async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
            self.attempt(format!("create {}", session.id)).await?;
            self.created.lock().unwrap().insert(session.id.clone());
            Ok(())
        }

        async fn append_segment(&self, segment: &SegmentRecord) -> Result<(), StoreError> {
            self.attempt(format!("append {} {}", segment.session_id, segment.index))
                .await
        }

        async fn finish_session(&self, id: &str, _end: &SessionEnd) -> Result<(), StoreError> {
            if !self.created.lock().unwrap().contains(id) {
                return Err(StoreError::SessionNotFound { id: id.to_owned() });
            }
            self.attempt(format!("finish {id}")).await
        }

        async fn list_sessions(
            &self,
            _limit: usize,
            _before_ms: Option<i64>,
        ) -> Result<Vec<SessionRecord>, StoreError> {
            Ok(Vec::new())
        }

        async fn get_session(
            &self,
            _id: &str,
        ) -> Result<Option<SessionWithTranscript>, StoreError> {
            Ok(None)
        }

        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }

        // The writer never touches keys.
        async fn create_key(&self, _key: &ApiKeyRecord) -> Result<(), StoreError> {
            Ok(())
        }

        async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
            Ok(Vec::new())
        }

        async fn find_key(&self, _key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
            Ok(None)
        }

        async fn touch_key(&self, _name: &str, _at_ms: i64) -> Result<(), StoreError> {
            Ok(())
        }

        async fn revoke_key(&self, _name: &str) -> Result<bool, StoreError> {
            Ok(false)
        }
    }

    fn create(id: &str) -> StoreOp {
        StoreOp::CreateSession(SessionRecord {
            id: id.to_owned(),
            started_at_ms: 1_700_000_000_000,
            ended_at_ms: None,
            client_addr: "127.0.0.1:5000".to_owned(),
            audio_ms: 0,
            close_reason: None,
            status: SessionStatus::Active,
        })
    }

    fn append(id: &str, index: i32) -> StoreOp {
        StoreOp::AppendSegment(SegmentRecord {
            session_id: id.to_owned(),
            index,
            text: format!("segment {index}"),
            start_ms: 0,
            end_ms: 1000,
            confidence: 0.9,
            words: Vec::new(),
        })
    }

    fn finish(id: &str) -> StoreOp {
        StoreOp::FinishSession {
            id: id.to_owned(),
            end: SessionEnd {
                ended_at_ms: 1_700_000_005_000,
                audio_ms: 5000,
                close_reason: "normal".to_owned(),
                status: SessionStatus::Completed,
            },
        }
    }

    /// Lets the writer task run until it is parked on a timer or the queue.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn applies_ops_in_order_exactly_once_after_transient_failures() {
        let store = FlakyStore::failing(3);
        let writer = StoreWriter::spawn(store.clone(), 16);
        let started = Instant::now();
        for op in [create("s1"), append("s1", 0), append("s1", 1), finish("s1")] {
            writer.submit(op).unwrap();
        }

        assert_eq!(writer.flush(Duration::from_secs(60)).await, 0);

        assert_eq!(
            store.applied(),
            ["create s1", "append s1 0", "append s1 1", "finish s1"]
        );
        let stats = writer.stats();
        assert_eq!(stats.applied, 4);
        assert_eq!(stats.retries, 3);
        assert_eq!(stats.pending, 0);
        assert!(stats.healthy);
        // Three failures of the first op wait 100 + 200 + 400 ms before it lands.
        assert_eq!(started.elapsed(), Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_bounded_in_bytes_as_well_as_operations() {
        let store = FlakyStore::failing(0);
        store.down.store(true, Ordering::SeqCst);
        let big = |index| {
            let StoreOp::AppendSegment(mut segment) = append("s1", index) else {
                unreachable!()
            };
            segment.text = "word ".repeat(2000);
            StoreOp::AppendSegment(segment)
        };
        let op_bytes = big(0).size_bytes();
        assert!(op_bytes > 10_000);
        let writer = StoreWriter::spawn_with_limits(store.clone(), 1000, 3 * op_bytes);
        for index in 0..3 {
            writer.submit(big(index)).unwrap();
        }
        assert_eq!(writer.stats().pending_bytes, 3 * op_bytes);
        assert_eq!(writer.submit(big(3)), Err(StoreWriteError::QueueFull));
        assert_eq!(writer.stats().rejected_full, 1);
        assert_eq!(
            writer.stats().pending_bytes,
            3 * op_bytes,
            "a refusal holds nothing"
        );
        store.down.store(false, Ordering::SeqCst);
        assert_eq!(writer.flush(Duration::from_secs(60)).await, 0);
        assert_eq!(writer.stats().pending_bytes, 0);
        writer.submit(big(3)).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_from_100_ms_and_caps_at_5_s() {
        let store = FlakyStore::failing(8);
        let writer = StoreWriter::spawn(store.clone(), 4);
        writer.submit(create("s1")).unwrap();

        assert_eq!(writer.flush(Duration::from_secs(60)).await, 0);

        let expected_ms = [100, 200, 400, 800, 1600, 3200, 5000, 5000];
        let expected: Vec<Duration> = expected_ms
            .iter()
            .map(|&ms| Duration::from_millis(ms))
            .collect();
        assert_eq!(store.attempt_gaps(), expected);
        assert_eq!(writer.stats().retries, 8);
        assert_eq!(store.applied(), ["create s1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_is_false_during_an_outage_and_true_after_recovery() {
        let store = FlakyStore::failing(0);
        store.down.store(true, Ordering::SeqCst);
        let writer = StoreWriter::spawn(store.clone(), 4);
        assert!(writer.stats().healthy);
        writer.submit(create("s1")).unwrap();

        tokio::time::sleep(Duration::from_secs(1)).await;
        let during = writer.stats();
        assert!(!during.healthy);
        assert!(during.retries >= 2, "{during:?}");
        assert_eq!(during.applied, 0);
        assert_eq!(during.pending, 1);

        store.down.store(false, Ordering::SeqCst);
        assert_eq!(writer.flush(Duration::from_secs(10)).await, 0);
        let after = writer.stats();
        assert!(after.healthy);
        assert_eq!(after.applied, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rejects_with_queue_full_while_the_store_is_down_and_drains_after_recovery() {
        let store = FlakyStore::failing(0);
        store.down.store(true, Ordering::SeqCst);
        let writer = StoreWriter::spawn(store.clone(), 3);
        writer.submit(create("s1")).unwrap();
        settle().await;
        // The first op is now being retried; it still counts against the capacity.
        writer.submit(append("s1", 0)).unwrap();
        writer.submit(append("s1", 1)).unwrap();

        assert_eq!(
            writer.submit(append("s1", 2)),
            Err(StoreWriteError::QueueFull)
        );
        assert_eq!(
            writer.clone().submit(finish("s1")),
            Err(StoreWriteError::QueueFull)
        );
        assert_eq!(writer.pending(), 3);
        assert_eq!(writer.stats().rejected_full, 2);

        store.down.store(false, Ordering::SeqCst);
        assert_eq!(writer.flush(Duration::from_secs(60)).await, 0);
        assert_eq!(store.applied(), ["create s1", "append s1 0", "append s1 1"]);
        // Room again once drained.
        writer.submit(finish("s1")).unwrap();
        assert_eq!(writer.flush(Duration::from_secs(60)).await, 0);
        assert_eq!(
            store.applied().last().map(String::as_str),
            Some("finish s1")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn flush_returns_the_pending_count_when_the_deadline_passes() {
        let store = FlakyStore::failing(0);
        store.down.store(true, Ordering::SeqCst);
        let writer = StoreWriter::spawn(store.clone(), 8);
        writer.submit(create("s1")).unwrap();
        writer.submit(append("s1", 0)).unwrap();

        let started = Instant::now();
        assert_eq!(writer.flush(Duration::from_secs(2)).await, 2);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(store.applied().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn skips_an_op_that_no_retry_can_fix_and_keeps_going() {
        let store = FlakyStore::failing(0);
        let writer = StoreWriter::spawn(store.clone(), 8);
        writer.submit(finish("never-created")).unwrap();
        writer.submit(create("s1")).unwrap();

        assert_eq!(writer.flush(Duration::from_secs(5)).await, 0);

        assert_eq!(store.applied(), ["create s1"]);
        let stats = writer.stats();
        assert_eq!((stats.applied, stats.discarded, stats.retries), (1, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_an_attempt_that_hangs_past_the_timeout() {
        let store = FlakyStore::failing(0);
        store.hang_next.store(true, Ordering::SeqCst);
        let writer = StoreWriter::spawn(store.clone(), 8);
        let started = Instant::now();
        writer.submit(create("s1")).unwrap();

        assert_eq!(writer.flush(Duration::from_secs(120)).await, 0);

        assert_eq!(started.elapsed(), ATTEMPT_TIMEOUT + INITIAL_BACKOFF);
        assert_eq!(store.applied(), ["create s1"]);
        assert_eq!(writer.stats().retries, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn warns_once_per_outage_plus_periodic_reminders_not_per_retry() {
        use tracing_subscriber::layer::SubscriberExt;

        struct CountWarnings(Arc<AtomicUsize>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountWarnings {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _context: tracing_subscriber::layer::Context<'_, S>,
            ) {
                if *event.metadata().level() == tracing::Level::WARN {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        let n_warnings = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(CountWarnings(n_warnings.clone()));
        // The test runtime is single-threaded, so the writer task logs through this thread's default.
        let _default = tracing::subscriber::set_default(subscriber);

        let store = FlakyStore::failing(0);
        store.down.store(true, Ordering::SeqCst);
        let writer = StoreWriter::spawn(store.clone(), 4);
        writer.submit(create("s1")).unwrap();
        tokio::time::sleep(Duration::from_secs(95)).await;
        store.down.store(false, Ordering::SeqCst);
        assert_eq!(writer.flush(Duration::from_secs(10)).await, 0);

        let retries = writer.stats().retries;
        assert!(retries > 20, "{retries} retries");
        // The first failure, then one reminder per 30 s: at 30, 60 and 90 s.
        assert_eq!(n_warnings.load(Ordering::SeqCst), 4);
    }
}
