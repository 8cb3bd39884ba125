//! Flow control for one session's unsent audio: `slow_down` above a high-water mark (once per
//! episode), `resume` below a low-water mark, and a hard limit beyond which the session closes.

/// What the session must tell the client after the buffered amount changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowSignal {
    Nothing,
    SlowDown,
    Resume,
    /// The hard limit was passed: error, close 1008.
    Overflow,
}

#[derive(Debug, Clone)]
pub struct FlowControl {
    high_water_bytes: usize,
    low_water_bytes: usize,
    max_bytes: usize,
    slowed: bool,
}

impl FlowControl {
    /// `low_water_bytes < high_water_bytes <= max_bytes` (clamped so).
    pub fn new(high_water_bytes: usize, low_water_bytes: usize, max_bytes: usize) -> Self {
        let high_water_bytes = high_water_bytes.min(max_bytes);
        Self {
            high_water_bytes,
            low_water_bytes: low_water_bytes.min(high_water_bytes.saturating_sub(1)),
            max_bytes,
            slowed: false,
        }
    }

    pub fn is_slowed(&self) -> bool {
        self.slowed
    }

    pub fn on_buffered(&mut self, buffered_bytes: usize) -> FlowSignal {
        if buffered_bytes > self.max_bytes {
            return FlowSignal::Overflow;
        }
        if !self.slowed && buffered_bytes >= self.high_water_bytes {
            self.slowed = true;
            return FlowSignal::SlowDown;
        }
        if self.slowed && buffered_bytes <= self.low_water_bytes {
            self.slowed = false;
            return FlowSignal::Resume;
        }
        FlowSignal::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_down_once_per_episode_and_resume_below_low_water() {
        let mut flow = FlowControl::new(1000, 200, 5000);
        assert_eq!(flow.on_buffered(500), FlowSignal::Nothing);
        assert_eq!(flow.on_buffered(1000), FlowSignal::SlowDown);
        assert_eq!(flow.on_buffered(1500), FlowSignal::Nothing);
        // Hysteresis: between the marks nothing changes.
        assert_eq!(flow.on_buffered(600), FlowSignal::Nothing);
        assert!(flow.is_slowed());
        assert_eq!(flow.on_buffered(200), FlowSignal::Resume);
        assert_eq!(flow.on_buffered(600), FlowSignal::Nothing);
        assert_eq!(flow.on_buffered(1200), FlowSignal::SlowDown);
    }

    #[test]
    fn overflow_beyond_the_hard_limit() {
        let mut flow = FlowControl::new(1000, 200, 5000);
        assert_eq!(flow.on_buffered(5000), FlowSignal::SlowDown);
        assert_eq!(flow.on_buffered(5001), FlowSignal::Overflow);
    }

    #[test]
    fn marks_are_kept_in_order() {
        let mut flow = FlowControl::new(10_000, 20_000, 5000);
        assert_eq!(flow.on_buffered(5000), FlowSignal::SlowDown);
        assert_eq!(flow.on_buffered(4999), FlowSignal::Resume);
    }
}
