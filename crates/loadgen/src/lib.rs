//! Measuring Earshot: word error rate against reference transcripts, latency percentiles, and
//! the load generator behind `earshot loadgen`.

pub mod clips;
pub mod corpus;
pub mod gateway_metrics;
pub mod latency;
pub mod procstat;
pub mod report;
pub mod run;
pub mod stats;
pub mod wer;

use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::report::Report;
use crate::run::{LoadConfig, Progress};

/// Where to observe the server under test.
#[derive(Debug, Clone, Default)]
pub struct ServerProbe {
    /// A process on this machine to sample CPU and memory from.
    pub pid: Option<u32>,
    /// `host:port` serving the gateway's `/metrics`, for its own latency histogram.
    pub metrics_addr: Option<String>,
}

/// Runs a load test: every session, a progress line on stderr when `show_progress`, and what
/// `probe` can see of the server.
pub async fn load_test(config: LoadConfig, probe: ServerProbe, show_progress: bool) -> Report {
    let config = Arc::new(config);
    let histogram_before = match &probe.metrics_addr {
        Some(addr) => gateway_metrics::scrape(addr).await,
        None => None,
    };
    let server_pid = probe.pid;
    let progress = Arc::new(Progress::default());
    let mut sampler = server_pid.and_then(procstat::Sampler::start);
    let started = Instant::now();
    let mut run = tokio::spawn(run::run(config.clone(), progress.clone()));
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut last_results = 0;
    let terminal = std::io::stderr().is_terminal();
    let outcomes = loop {
        tokio::select! {
            outcomes = &mut run => break outcomes.unwrap_or_default(),
            _ = ticker.tick() => {
                if let Some(sampler) = &mut sampler {
                    sampler.sample();
                }
                let seconds = started.elapsed().as_secs();
                // On a terminal the line is rewritten in place; in a log, one line per 10 s.
                if show_progress && (terminal || seconds.is_multiple_of(10)) {
                    let results = progress.results.load(Ordering::Relaxed);
                    eprint!(
                        "{}{:>6.0} s  sessions up {:>6}  done {:>6}/{}  results/s {:>7}  errors {:>5}  ",
                        if terminal { "\r" } else { "\n" },
                        started.elapsed().as_secs_f64(),
                        progress.sessions_up.load(Ordering::Relaxed),
                        progress.sessions_done.load(Ordering::Relaxed),
                        config.sessions,
                        results - last_results,
                        progress.errors.load(Ordering::Relaxed),
                    );
                    let _ = std::io::stderr().flush();
                }
                last_results = progress.results.load(Ordering::Relaxed);
            }
        }
    };
    if show_progress {
        eprintln!();
    }
    let wall = started.elapsed();
    let server = sampler.map(procstat::Sampler::finish);
    let mut report = Report::new(&config.url, config.pace, wall, &outcomes, server);
    if let (Some(addr), Some(before)) = (&probe.metrics_addr, histogram_before)
        && let Some(after) = gateway_metrics::scrape(addr).await
    {
        report.gateway_latency = gateway_metrics::GatewayLatency::of(&after.since(&before));
    }
    report
}
