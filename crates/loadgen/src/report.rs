//! The load generator's report: a terminal table and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::gateway_metrics::GatewayLatency;
use crate::procstat::ServerStats;
use crate::run::SessionOutcome;
use crate::stats::Percentiles;
use crate::wer::{WordErrors, word_errors};

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Default)]
pub struct LatencySummary {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl LatencySummary {
    pub fn of(samples: &[Duration]) -> Self {
        let p = Percentiles::of(samples);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Self {
            count: p.count,
            p50_ms: ms(p.p50),
            p95_ms: ms(p.p95),
            p99_ms: ms(p.p99),
            max_ms: ms(p.max),
            mean_ms: ms(p.mean),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WerSummary {
    pub rate: f64,
    pub reference_words: usize,
    pub substitutions: usize,
    pub deletions: usize,
    pub insertions: usize,
    pub sessions_scored: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub sessions: usize,
    pub pace: f64,
    pub wall_seconds: f64,
    pub sessions_connected: usize,
    pub connect_errors: BTreeMap<String, usize>,
    pub audio_seconds_sent: f64,
    pub result_latency: LatencySummary,
    /// Result latency of each session's first and last quarter of frames: a last quarter far
    /// above the first means the server falls further behind as the run goes on.
    pub result_latency_first_quarter: LatencySummary,
    pub result_latency_last_quarter: LatencySummary,
    pub first_partial_latency: LatencySummary,
    pub final_latency: LatencySummary,
    /// From sending `close` to the server's close frame (all finals delivered).
    pub close_latency: LatencySummary,
    pub results_per_second: f64,
    pub partials: u64,
    pub finals: u64,
    /// Frames no result covered (silence), left out of the result latency.
    pub uncovered_frames: u64,
    pub wer: Option<WerSummary>,
    pub slow_downs: u64,
    pub resumes: u64,
    pub errors: BTreeMap<String, u64>,
    pub closes_by_code: BTreeMap<String, usize>,
    pub closes_by_reason: BTreeMap<String, usize>,
    /// Sessions whose `closed.audio_ms` is below the audio sent without an error saying why:
    /// audio lost silently. Must be 0.
    pub sessions_with_unexplained_audio_loss: usize,
    pub server: Option<ServerStats>,
    /// The gateway's `stt_latency_seconds` over the run (from its `/metrics`).
    pub gateway_latency: Option<GatewayLatency>,
}

impl Report {
    pub fn new(
        url: &str,
        pace: f64,
        wall: Duration,
        outcomes: &[SessionOutcome],
        server: Option<ServerStats>,
    ) -> Self {
        let mut result_latency = Vec::new();
        let mut first_quarter = Vec::new();
        let mut last_quarter = Vec::new();
        let mut first_partial = Vec::new();
        let mut final_latency = Vec::new();
        let mut close_latency = Vec::new();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut connect_errors: BTreeMap<String, usize> = BTreeMap::new();
        let mut closes_by_code: BTreeMap<String, usize> = BTreeMap::new();
        let mut closes_by_reason: BTreeMap<String, usize> = BTreeMap::new();
        let mut word_totals = WordErrors::default();
        let mut sessions_scored = 0;
        let mut unexplained_loss = 0;
        let (mut partials, mut finals, mut slow_downs, mut resumes, mut uncovered) =
            (0, 0, 0, 0, 0);
        let mut audio_ms = 0;
        for outcome in outcomes {
            if let Some(err) = &outcome.connect_error {
                *connect_errors.entry(short_error(err)).or_default() += 1;
                continue;
            }
            let own = &outcome.latency.result_latency;
            result_latency.extend(own);
            first_quarter.extend(&own[..own.len() / 4]);
            last_quarter.extend(&own[own.len() - own.len() / 4..]);
            first_partial.extend(&outcome.latency.first_partial);
            final_latency.extend(&outcome.latency.final_latency);
            close_latency.extend(outcome.close_latency);
            uncovered += outcome.latency.uncovered_frames;
            partials += outcome.partials;
            finals += outcome.finals;
            slow_downs += outcome.slow_downs;
            resumes += outcome.resumes;
            audio_ms += outcome.audio_ms_sent;
            for (code, n) in &outcome.errors {
                *errors.entry(code.clone()).or_default() += n;
            }
            let code = outcome
                .close_code
                .map_or_else(|| "none".to_string(), |c| c.to_string());
            *closes_by_code.entry(code).or_default() += 1;
            let reason = outcome
                .close_reason
                .clone()
                .unwrap_or_else(|| "none".into());
            *closes_by_reason.entry(reason).or_default() += 1;
            let received = outcome.server_audio_ms.unwrap_or(0);
            // The server counts whole milliseconds of what it received.
            if received + 1 < outcome.audio_ms_sent && outcome.errors.is_empty() {
                unexplained_loss += 1;
            }
            if outcome.errors.is_empty()
                && let Some(reference) = &outcome.reference
            {
                word_totals = word_totals + word_errors(reference, &outcome.hypothesis);
                sessions_scored += 1;
            }
        }
        let wall_seconds = wall.as_secs_f64();
        Self {
            url: url.to_string(),
            sessions: outcomes.len(),
            pace,
            wall_seconds,
            sessions_connected: outcomes.iter().filter(|o| o.connected).count(),
            connect_errors,
            audio_seconds_sent: audio_ms as f64 / 1000.0,
            result_latency: LatencySummary::of(&result_latency),
            result_latency_first_quarter: LatencySummary::of(&first_quarter),
            result_latency_last_quarter: LatencySummary::of(&last_quarter),
            first_partial_latency: LatencySummary::of(&first_partial),
            final_latency: LatencySummary::of(&final_latency),
            close_latency: LatencySummary::of(&close_latency),
            results_per_second: if wall_seconds > 0.0 {
                (partials + finals) as f64 / wall_seconds
            } else {
                0.0
            },
            partials,
            finals,
            uncovered_frames: uncovered,
            wer: (sessions_scored > 0).then(|| WerSummary {
                rate: word_totals.rate(),
                reference_words: word_totals.reference_words,
                substitutions: word_totals.substitutions,
                deletions: word_totals.deletions,
                insertions: word_totals.insertions,
                sessions_scored,
            }),
            slow_downs,
            resumes,
            errors,
            closes_by_code,
            closes_by_reason,
            sessions_with_unexplained_audio_loss: unexplained_loss,
            server,
            gateway_latency: None,
        }
    }

    /// The report as a terminal table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} sessions at {}x real time against {} ({} connected), {:.1} s, {:.0} s of audio sent",
            self.sessions,
            self.pace,
            self.url,
            self.sessions_connected,
            self.wall_seconds,
            self.audio_seconds_sent
        );
        let _ = writeln!(
            out,
            "{:<24} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "latency (ms)", "count", "p50", "p95", "p99", "max"
        );
        for (name, summary) in [
            ("result", &self.result_latency),
            ("  first quarter", &self.result_latency_first_quarter),
            ("  last quarter", &self.result_latency_last_quarter),
            ("first partial", &self.first_partial_latency),
            ("final after speech end", &self.final_latency),
            ("close -> all finals", &self.close_latency),
        ] {
            let _ = writeln!(
                out,
                "{:<24} {:>8} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
                name, summary.count, summary.p50_ms, summary.p95_ms, summary.p99_ms, summary.max_ms
            );
        }
        if let Some(gateway) = &self.gateway_latency {
            let _ = writeln!(
                out,
                "{:<24} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>8}",
                "gateway (its histogram)",
                gateway.count,
                gateway.p50_ms,
                gateway.p95_ms,
                gateway.p99_ms,
                "-"
            );
        }
        let _ = writeln!(
            out,
            "results: {} partials, {} finals, {:.1}/s; slow_down {}, resume {}",
            self.partials, self.finals, self.results_per_second, self.slow_downs, self.resumes
        );
        if let Some(wer) = &self.wer {
            let _ = writeln!(
                out,
                "WER {:.1}% over {} words ({} sessions; S {} D {} I {})",
                wer.rate * 100.0,
                wer.reference_words,
                wer.sessions_scored,
                wer.substitutions,
                wer.deletions,
                wer.insertions
            );
        }
        let _ = writeln!(
            out,
            "closes by code {:?}; by reason {:?}",
            self.closes_by_code, self.closes_by_reason
        );
        if !self.errors.is_empty() || !self.connect_errors.is_empty() {
            let _ = writeln!(
                out,
                "errors {:?}; connect errors {:?}",
                self.errors, self.connect_errors
            );
        }
        let _ = writeln!(
            out,
            "sessions with unexplained audio loss: {}",
            self.sessions_with_unexplained_audio_loss
        );
        if let Some(server) = &self.server {
            let _ = writeln!(
                out,
                "server pid {}: CPU mean {:.0}% max {:.0}% (100% = one core); RSS start {:.0} MiB, max {:.0} MiB",
                server.pid,
                server.cpu_percent_mean,
                server.cpu_percent_max,
                server.rss_mib_start,
                server.rss_mib_max
            );
        }
        out
    }
}

/// Connection errors grouped by kind, not by their full text.
fn short_error(err: &str) -> String {
    let err = err.to_lowercase();
    if err.contains("503") {
        "http 503 (at capacity)".into()
    } else if err.contains("refused") {
        "connection refused".into()
    } else if err.contains("timed out") {
        "timed out".into()
    } else {
        err.chars().take(60).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::ResultSpan;
    use std::time::Instant;

    fn outcome_with_latencies(ms: &[u64]) -> SessionOutcome {
        let mut outcome = SessionOutcome {
            connected: true,
            ..SessionOutcome::default()
        };
        let base = Instant::now();
        for (idx, &latency) in ms.iter().enumerate() {
            let end = (idx as u64 + 1) * 100;
            outcome.latency.frame_sent(end, base);
            outcome.latency.result(
                ResultSpan {
                    start_ms: 0,
                    end_ms: end,
                    is_final: false,
                },
                base + Duration::from_millis(latency),
            );
        }
        outcome.partials = ms.len() as u64;
        outcome
    }

    #[test]
    fn percentiles_pool_every_session() {
        let outcomes = vec![
            outcome_with_latencies(&[10, 20, 30, 40, 50]),
            outcome_with_latencies(&[60, 70, 80, 90, 100]),
        ];
        let report = Report::new("ws://x", 1.0, Duration::from_secs(2), &outcomes, None);
        assert_eq!(report.result_latency.count, 10);
        assert_eq!(report.result_latency.p50_ms, 50.0);
        assert_eq!(report.result_latency.p95_ms, 100.0);
        assert_eq!(report.result_latency.max_ms, 100.0);
        assert_eq!(report.results_per_second, 5.0);
        // Each session's first and last quarter (one frame of five each).
        assert_eq!(report.result_latency_first_quarter.count, 2);
        assert_eq!(report.result_latency_first_quarter.max_ms, 60.0);
        assert_eq!(report.result_latency_last_quarter.p50_ms, 50.0);
    }

    #[test]
    fn wer_counts_only_sessions_without_errors() {
        let mut good = outcome_with_latencies(&[10]);
        good.reference = Some("ask not what your country can do".into());
        good.hypothesis = "ask not what your country can do".into();
        let mut bad = outcome_with_latencies(&[10]);
        bad.reference = Some("ask not".into());
        bad.hypothesis = String::new();
        bad.errors.insert("buffer_limit".into(), 1);
        let report = Report::new("ws://x", 1.0, Duration::from_secs(1), &[good, bad], None);
        let wer = report.wer.unwrap();
        assert_eq!(wer.sessions_scored, 1);
        assert_eq!(wer.rate, 0.0);
        assert_eq!(report.errors["buffer_limit"], 1);
    }

    #[test]
    fn audio_the_server_did_not_receive_without_an_error_is_flagged() {
        let mut silent_loss = outcome_with_latencies(&[10]);
        silent_loss.audio_ms_sent = 5000;
        silent_loss.server_audio_ms = Some(4000);
        let mut explained = outcome_with_latencies(&[10]);
        explained.audio_ms_sent = 5000;
        explained.server_audio_ms = Some(4000);
        explained.errors.insert("buffer_limit".into(), 1);
        let mut whole = outcome_with_latencies(&[10]);
        whole.audio_ms_sent = 5000;
        whole.server_audio_ms = Some(5000);
        let report = Report::new(
            "ws://x",
            1.0,
            Duration::from_secs(1),
            &[silent_loss, explained, whole],
            None,
        );
        assert_eq!(report.sessions_with_unexplained_audio_loss, 1);
    }

    #[test]
    fn connect_errors_are_grouped_and_not_scored() {
        let failed = SessionOutcome {
            connect_error: Some("HTTP error: 503 Service Unavailable".into()),
            ..SessionOutcome::default()
        };
        let report = Report::new("ws://x", 1.0, Duration::from_secs(1), &[failed], None);
        assert_eq!(report.sessions_connected, 0);
        assert_eq!(report.connect_errors["http 503 (at capacity)"], 1);
        assert!(report.wer.is_none());
        assert!(report.table().contains("connect errors"));
    }
}
