//! Measuring Earshot: word error rate against reference transcripts, latency percentiles, and
//! the load generator behind `earshot loadgen`.

pub mod clips;
pub mod corpus;
pub mod latency;
pub mod procstat;
pub mod report;
pub mod run;
pub mod stats;
pub mod wer;

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::report::Report;
use crate::run::{LoadConfig, Progress};

/// Runs a load test: every session, a progress line on stderr when `show_progress`, and the
/// server's CPU and memory when `server_pid` names a process on this machine.
pub async fn load_test(config: LoadConfig, server_pid: Option<u32>, show_progress: bool) -> Report {
    let config = Arc::new(config);
    let progress = Arc::new(Progress::default());
    let mut sampler = server_pid.and_then(procstat::Sampler::start);
    let started = Instant::now();
    let mut run = tokio::spawn(run::run(config.clone(), progress.clone()));
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut last_results = 0;
    let outcomes = loop {
        tokio::select! {
            outcomes = &mut run => break outcomes.unwrap_or_default(),
            _ = ticker.tick() => {
                if let Some(sampler) = &mut sampler {
                    sampler.sample();
                }
                if show_progress {
                    let results = progress.results.load(Ordering::Relaxed);
                    eprint!(
                        "\r{:>6.0} s  sessions up {:>6}  done {:>6}/{}  results/s {:>7}  errors {:>5}  ",
                        started.elapsed().as_secs_f64(),
                        progress.sessions_up.load(Ordering::Relaxed),
                        progress.sessions_done.load(Ordering::Relaxed),
                        config.sessions,
                        results - last_results,
                        progress.errors.load(Ordering::Relaxed),
                    );
                    let _ = std::io::stderr().flush();
                    last_results = results;
                }
            }
        }
    };
    if show_progress {
        eprintln!();
    }
    let server = sampler.map(procstat::Sampler::finish);
    Report::new(
        &config.url,
        config.pace,
        started.elapsed(),
        &outcomes,
        server,
    )
}
