//! CPU and memory of the server under test, sampled from `/proc` when it runs on this machine.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Linux's USER_HZ: the unit of CPU times in `/proc/PID/stat` (100 on every mainstream arch).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerStats {
    pub pid: u32,
    /// CPU use over the run; 100 % is one core busy.
    pub cpu_percent_mean: f64,
    /// Highest over one sampling interval.
    pub cpu_percent_max: f64,
    pub rss_mib_start: f64,
    pub rss_mib_max: f64,
    pub rss_mib_end: f64,
}

/// CPU time (ticks) and resident memory (KiB) of `pid` now.
pub fn read(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((cpu_ticks(&stat)?, rss_kib(&status)?))
}

/// utime + stime from a `/proc/PID/stat` line (fields 14 and 15; the command name in
/// parentheses may hold spaces, so count from its closing parenthesis).
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS from `/proc/PID/status`, in KiB.
pub fn rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Samples a process every `interval` until stopped.
pub struct Sampler {
    pid: u32,
    first: (Instant, u64, u64),
    last: (Instant, u64),
    cpu_max: f64,
    rss_max: u64,
    rss_end: u64,
}

impl Sampler {
    pub fn start(pid: u32) -> Option<Self> {
        let (ticks, rss) = read(pid)?;
        let now = Instant::now();
        Some(Self {
            pid,
            first: (now, ticks, rss),
            last: (now, ticks),
            cpu_max: 0.0,
            rss_max: rss,
            rss_end: rss,
        })
    }

    pub fn sample(&mut self) {
        let Some((ticks, rss)) = read(self.pid) else {
            return;
        };
        let now = Instant::now();
        let elapsed = now.duration_since(self.last.0);
        if elapsed >= Duration::from_millis(100) {
            let cpu = cpu_percent(ticks - self.last.1, elapsed);
            self.cpu_max = self.cpu_max.max(cpu);
            self.last = (now, ticks);
        }
        self.rss_max = self.rss_max.max(rss);
        self.rss_end = rss;
    }

    pub fn finish(mut self) -> ServerStats {
        self.sample();
        let (started, first_ticks, first_rss) = self.first;
        let mib = |kib: u64| kib as f64 / 1024.0;
        ServerStats {
            pid: self.pid,
            cpu_percent_mean: cpu_percent(self.last.1 - first_ticks, self.last.0 - started),
            cpu_percent_max: self.cpu_max,
            rss_mib_start: mib(first_rss),
            rss_mib_max: mib(self.rss_max),
            rss_mib_end: mib(self.rss_end),
        }
    }
}

fn cpu_percent(ticks: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        return 0.0;
    }
    100.0 * (ticks as f64 / TICKS_PER_SECOND) / elapsed.as_secs_f64()
}

/// The process listening on TCP `port` on this machine, if it can be seen: the socket's inode
/// from `/proc/net/tcp{,6}`, then the process holding it among `/proc/*/fd`.
pub fn find_listener(port: u16) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .find_map(|table| listening_inode(&table, port))?;
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|link| link.to_string_lossy() == target) {
                return Some(pid);
            }
        }
    }
    None
}

/// The inode of the socket listening on `port` in a `/proc/net/tcp` table.
fn listening_inode(table: &str, port: u16) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local = fields.get(1)?;
        let state = fields.get(3)?;
        let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
        // 0A is TCP_LISTEN.
        (local_port == port && *state == "0A")
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces() {
        let stat = "1234 (earshot serve) S 1 1234 1234 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(cpu_ticks(stat), Some(300));
    }

    #[test]
    fn rss_is_read_in_kib() {
        let status = "Name:\tearshot\nVmPeak:\t 900000 kB\nVmRSS:\t  262144 kB\nThreads:\t9\n";
        assert_eq!(rss_kib(status), Some(262_144));
    }

    #[test]
    fn the_listening_socket_is_found_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 20 4 30 10 -1\n";
        assert_eq!(listening_inode(table, 8080), Some(4242));
        assert_eq!(listening_inode(table, 8081), None);
    }

    #[test]
    fn cpu_percent_is_per_core() {
        assert_eq!(cpu_percent(200, Duration::from_secs(1)), 200.0);
        assert_eq!(cpu_percent(50, Duration::from_secs(2)), 25.0);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let mut sampler = Sampler::start(std::process::id()).expect("own /proc entry");
        sampler.sample();
        let stats = sampler.finish();
        assert!(stats.rss_mib_max > 0.0);
    }
}
