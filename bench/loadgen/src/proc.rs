//! CPU time and resident memory of a process, from /proc (Linux).

use std::time::Instant;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) at: Instant,
    /// User + system CPU seconds.
    pub(crate) cpu_s: f64,
    pub(crate) rss_kib: u64,
}

/// Reads `/proc/<pid>/…` (`"self"` for this process); a comma-separated list of
/// pids (nginx's workers) gives their sums.
pub(crate) fn sample(pids: &str) -> Option<Sample> {
    let mut total = Sample {
        at: Instant::now(),
        cpu_s: 0.0,
        rss_kib: 0,
    };
    for pid in pids.split(',') {
        let one = sample_one(pid.trim())?;
        total.cpu_s += one.cpu_s;
        total.rss_kib += one.rss_kib;
    }
    Some(total)
}

fn sample_one(pid: &str) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    // utime and stime, in clock ticks (USER_HZ, 100 on Linux).
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(Sample {
        at: Instant::now(),
        cpu_s: ticks / 100.0,
        rss_kib,
    })
}

/// CPU use between two samples, in percent of one core.
pub(crate) fn cpu_percent(from: Sample, to: Sample) -> f64 {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    if wall > 0.0 {
        100.0 * (to.cpu_s - from.cpu_s) / wall
    } else {
        0.0
    }
}
