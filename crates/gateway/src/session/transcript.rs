//! What a session writes to the store: its row from the first audio on (a session refused
//! before that leaves nothing behind), each non-empty final under the `segment` number the
//! client saw, and how it ended. Writes are queued and never wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use earshot_proto::StreamingRecognizeResponse;
use earshot_store::{
    SegmentRecord, SessionEnd, SessionRecord, SessionStatus, StoreOp, StoreWriter, WordRecord,
    now_ms,
};

use crate::metrics::GatewayMetrics;
use crate::session::CloseReason;

/// The stored sessions still open, with their audio so far, so that a gateway forced to stop
/// can mark them `interrupted`.
#[derive(Debug, Default)]
pub struct LiveSessions {
    sessions: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl LiveSessions {
    fn insert(&self, id: &str) -> Arc<AtomicU64> {
        let audio_ms = Arc::new(AtomicU64::new(0));
        self.lock().insert(id.to_string(), audio_ms.clone());
        audio_ms
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `interrupted` for every session still open; returns how many.
    pub fn interrupt_all(&self, writer: &StoreWriter) -> usize {
        let sessions = std::mem::take(&mut *self.lock());
        for (id, audio_ms) in &sessions {
            let op = StoreOp::FinishSession {
                id: id.clone(),
                end: SessionEnd {
                    ended_at_ms: now_ms(),
                    audio_ms: audio_ms.load(Ordering::Relaxed) as i64,
                    close_reason: CloseReason::ServerShutdown.as_str().to_string(),
                    status: SessionStatus::Interrupted,
                },
            };
            if let Err(err) = writer.submit(op) {
                tracing::error!(%err, "cannot mark a session interrupted");
            }
        }
        sessions.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AtomicU64>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct Transcript {
    id: String,
    live: Arc<LiveSessions>,
    /// This session's entry in `live`, once created.
    live_audio_ms: Option<Arc<AtomicU64>>,
    client_addr: String,
    writer: Option<StoreWriter>,
    metrics: GatewayMetrics,
    started_at_ms: i64,
    /// The session row was queued.
    created: bool,
    /// Finals received, empty ones included (`closed.segments`).
    finals: u64,
    /// A refused write was already logged for this session.
    refusal_logged: bool,
}

impl Transcript {
    pub fn new(
        id: String,
        client_addr: String,
        writer: Option<StoreWriter>,
        metrics: GatewayMetrics,
        live: Arc<LiveSessions>,
    ) -> Self {
        Self {
            id,
            live,
            live_audio_ms: None,
            client_addr,
            writer,
            metrics,
            started_at_ms: now_ms(),
            created: false,
            finals: 0,
            refusal_logged: false,
        }
    }

    pub fn finals(&self) -> u64 {
        self.finals
    }

    pub fn is_created(&self) -> bool {
        self.created
    }

    /// Queues the session row, once.
    pub fn create(&mut self) {
        if self.created {
            return;
        }
        self.created = true;
        if self.writer.is_some() {
            self.live_audio_ms = Some(self.live.insert(&self.id));
        }
        self.submit(StoreOp::CreateSession(SessionRecord {
            id: self.id.clone(),
            started_at_ms: self.started_at_ms,
            ended_at_ms: None,
            client_addr: self.client_addr.clone(),
            audio_ms: 0,
            close_reason: None,
            status: SessionStatus::Active,
        }));
    }

    /// The audio received so far (what an interrupted session is stored with).
    pub fn set_audio_ms(&self, audio_ms: u64) {
        if let Some(live) = &self.live_audio_ms {
            live.store(audio_ms, Ordering::Relaxed);
        }
    }

    /// Counts a final and queues it (empty finals carry no words to keep).
    pub fn final_result(&mut self, response: &StreamingRecognizeResponse) {
        self.finals += 1;
        if response.transcript.is_empty() {
            return;
        }
        self.create();
        self.submit(StoreOp::AppendSegment(SegmentRecord {
            session_id: self.id.clone(),
            index: response.segment_index,
            text: response.transcript.clone(),
            start_ms: response.start_ms,
            end_ms: response.end_ms,
            confidence: response.confidence,
            words: response
                .words
                .iter()
                .map(|w| WordRecord {
                    word: w.word.clone(),
                    start_ms: w.start_ms,
                    end_ms: w.end_ms,
                    confidence: w.confidence,
                })
                .collect(),
        }));
    }

    /// Queues how the session ended (nothing if it never had a row).
    pub fn finish(&mut self, reason: CloseReason, audio_ms: u64) {
        let status = if reason.is_clean() {
            SessionStatus::Completed
        } else {
            SessionStatus::Failed
        };
        self.end(reason.as_str(), status, audio_ms);
    }

    fn end(&mut self, reason: &str, status: SessionStatus, audio_ms: u64) {
        if !self.created {
            return;
        }
        if self.live_audio_ms.take().is_some() {
            self.live.remove(&self.id);
        }
        self.submit(StoreOp::FinishSession {
            id: self.id.clone(),
            end: SessionEnd {
                ended_at_ms: now_ms(),
                audio_ms: audio_ms as i64,
                close_reason: reason.to_string(),
                status,
            },
        });
    }

    /// Queues a store write without waiting; a refusal is counted, and logged once.
    fn submit(&mut self, op: StoreOp) {
        let Some(writer) = &self.writer else {
            return;
        };
        let kind = op.kind();
        if let Err(err) = writer.submit(op) {
            self.metrics.error("store");
            if !self.refusal_logged {
                self.refusal_logged = true;
                tracing::error!(op = kind, %err, "transcript write refused");
            }
        }
    }
}
