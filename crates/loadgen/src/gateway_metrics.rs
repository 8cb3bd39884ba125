//! The gateway's own view of latency: `stt_latency_seconds` scraped from its `/metrics` before
//! and after a run. The gateway times a result from the arrival of the audio frame holding its
//! `end_ms` to sending it, so against an engine that answers at once (the benchmark-only echo
//! backend) this is the latency the gateway itself adds.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HISTOGRAM: &str = "stt_latency_seconds_bucket";

/// Cumulative bucket counts: (upper bound in seconds, count), ascending, `+Inf` last.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram(pub Vec<(f64, f64)>);

impl Histogram {
    /// Reads `stt_latency_seconds` from Prometheus text.
    pub fn parse(text: &str) -> Self {
        let mut buckets: Vec<(f64, f64)> = text
            .lines()
            .filter(|line| line.starts_with(HISTOGRAM))
            .filter_map(|line| {
                let le = line.split("le=\"").nth(1)?.split('"').next()?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                let count = line.rsplit(' ').next()?.parse().ok()?;
                Some((bound, count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self(buckets)
    }

    /// Observations made between `earlier` and `self`.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram(
            self.0
                .iter()
                .map(|&(bound, count)| {
                    let before = earlier
                        .0
                        .iter()
                        .find(|(b, _)| *b == bound)
                        .map_or(0.0, |&(_, c)| c);
                    (bound, count - before)
                })
                .collect(),
        )
    }

    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |&(_, count)| count)
    }

    /// The `q` quantile (0..1) as Prometheus' `histogram_quantile` computes it: linear within
    /// the bucket that holds it; the highest finite bound when it falls in `+Inf`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower_bound = 0.0;
        let mut lower_count = 0.0;
        for &(bound, count) in &self.0 {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower_bound);
                }
                let in_bucket = count - lower_count;
                let fraction = if in_bucket > 0.0 {
                    (rank - lower_count) / in_bucket
                } else {
                    0.0
                };
                return Some(lower_bound + (bound - lower_bound) * fraction);
            }
            lower_bound = bound;
            lower_count = count;
        }
        Some(lower_bound)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GatewayLatency {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl GatewayLatency {
    pub fn of(histogram: &Histogram) -> Option<Self> {
        let ms = |q| histogram.quantile(q).map(|s| s * 1000.0);
        Some(Self {
            count: histogram.count() as u64,
            p50_ms: ms(0.5)?,
            p95_ms: ms(0.95)?,
            p99_ms: ms(0.99)?,
        })
    }
}

/// `GET /metrics` from `host:port` (plain HTTP/1.0, so the body is never chunked).
pub async fn scrape(addr: &str) -> Option<Histogram> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response);
        text.starts_with("HTTP/1.")
            .then(|| text.split(' ').nth(1) == Some("200"))
            .filter(|ok| *ok)?;
        Some(Histogram::parse(&text))
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE stt_latency_seconds histogram\n\
stt_latency_seconds_sum 1.5\n\
stt_latency_seconds_count 100\n\
stt_latency_seconds_bucket{le=\"0.001\"} 10\n\
stt_latency_seconds_bucket{le=\"0.005\"} 90\n\
stt_latency_seconds_bucket{le=\"0.01\"} 99\n\
stt_latency_seconds_bucket{le=\"+Inf\"} 100\n\
stt_first_partial_seconds_bucket{le=\"0.001\"} 5\n";

    #[test]
    fn parses_only_the_result_latency_histogram() {
        let histogram = Histogram::parse(TEXT);
        assert_eq!(histogram.0.len(), 4);
        assert_eq!(histogram.count(), 100.0);
        assert_eq!(histogram.0[0], (0.001, 10.0));
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket_like_prometheus() {
        let histogram = Histogram::parse(TEXT);
        // Rank 50 is the 40th of 80 observations in (1 ms, 5 ms]: 1 + 4 * 0.5 = 3 ms.
        assert!((histogram.quantile(0.5).unwrap() - 0.003).abs() < 1e-12);
        // Rank 99 is the last of (5 ms, 10 ms].
        assert!((histogram.quantile(0.99).unwrap() - 0.010).abs() < 1e-12);
        // Rank 100 falls in +Inf: the highest finite bound.
        assert_eq!(histogram.quantile(1.0), Some(0.01));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn a_run_is_the_difference_of_two_scrapes() {
        let before = Histogram(vec![(0.001, 10.0), (f64::INFINITY, 10.0)]);
        let after = Histogram(vec![(0.001, 30.0), (f64::INFINITY, 40.0)]);
        let run = after.since(&before);
        assert_eq!(run.0, vec![(0.001, 20.0), (f64::INFINITY, 30.0)]);
        assert_eq!(GatewayLatency::of(&run).unwrap().count, 30);
    }
}
