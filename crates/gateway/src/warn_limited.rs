//! Warnings that a flood could repeat thousands of times a second: the first is logged, then at
//! most one a minute with the number left out in between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct WarnLimited {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl WarnLimited {
    /// Calls `log` with the number of warnings left out since the last one, unless one was
    /// logged less than a minute ago.
    pub fn warn(&self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| now.duration_since(at) < INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        drop(last);
        log(self.suppressed.swap(0, Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_of_a_burst_is_logged() {
        let limited = WarnLimited::default();
        let mut logged = Vec::new();
        for _ in 0..1000 {
            limited.warn(|suppressed| logged.push(suppressed));
        }
        assert_eq!(logged, vec![0]);
        assert_eq!(limited.suppressed.load(Ordering::Relaxed), 999);
    }
}
