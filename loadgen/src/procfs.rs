//! Reading the server's memory and CPU from `/proc` (Linux only; absent elsewhere).
//!
//! Peak RSS is `VmHWM` of `/proc/PID/status`. Writing `5` to `/proc/PID/clear_refs` resets
//! it (root or same user), so each scenario reports its own peak; when the reset is not
//! permitted the value is the peak since the process started, and the report says so.

use std::fs;

/// A snapshot of a process's counters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    /// Current resident set, KiB.
    pub rss_kib: Option<u64>,
    /// Peak resident set since start or the last reset, KiB.
    pub hwm_kib: Option<u64>,
    /// User + system CPU seconds consumed so far.
    pub cpu_s: Option<f64>,
}

fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds from `/proc/PID/stat` (fields 14 and 15, in clock ticks of 1/100 s, the
/// value of `CLK_TCK` on every Linux configuration this runs on).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Sample process `pid` ("self" for the generator).
pub(crate) fn sample(pid: &str) -> Sample {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Sample {
        rss_kib: status_field(&status, "VmRSS:"),
        hwm_kib: status_field(&status, "VmHWM:"),
        cpu_s: cpu_seconds(pid),
    }
}

/// Reset the peak-RSS counter of `pid`; returns whether the kernel accepted it.
pub(crate) fn reset_peak(pid: &str) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Open file descriptors of `pid` (entries of `/proc/PID/fd`): sockets held by a server.
pub(crate) fn fds(pid: &str) -> Option<u64> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}
