//! Percentiles and summaries of latency samples.

use std::time::Duration;

/// Summary of a set of durations; nearest-rank percentiles.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Percentiles {
    pub count: usize,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl Percentiles {
    pub fn of(samples: &[Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let total: Duration = sorted.iter().sum();
        Self {
            count: sorted.len(),
            p50: nearest_rank(&sorted, 50.0),
            p95: nearest_rank(&sorted, 95.0),
            p99: nearest_rank(&sorted, 99.0),
            max: *sorted.last().expect("not empty"),
            mean: total / sorted.len() as u32,
        }
    }
}

/// The smallest sample such that at least `percent` % of samples are less or equal to it.
/// `sorted` must be sorted ascending and not empty.
pub fn nearest_rank(sorted: &[Duration], percent: f64) -> Duration {
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn fmt_ms(duration: Duration) -> String {
    format!("{:.0}", duration.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles_of_one_to_hundred() {
        let samples = ms(&(1..=100).collect::<Vec<_>>());
        let p = Percentiles::of(&samples);
        assert_eq!(p.p50, Duration::from_millis(50));
        assert_eq!(p.p95, Duration::from_millis(95));
        assert_eq!(p.p99, Duration::from_millis(99));
        assert_eq!(p.max, Duration::from_millis(100));
        assert_eq!(p.count, 100);
    }

    #[test]
    fn small_sets_use_the_largest_sample_for_high_percentiles() {
        let p = Percentiles::of(&ms(&[30, 10, 20]));
        assert_eq!(p.p50, Duration::from_millis(20));
        assert_eq!(p.p95, Duration::from_millis(30));
        assert_eq!(p.mean, Duration::from_millis(20));
    }

    #[test]
    fn empty_set_is_all_zero() {
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
    }
}
