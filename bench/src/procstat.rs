//! The broker's CPU time and memory, read from `/proc/<pid>/stat` and
//! `/proc/<pid>/status` before and after a run.

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

/// Clock ticks per second of the times in `/proc/<pid>/stat`: USER_HZ, which Linux
/// fixes at 100 for user space whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// One reading of a process.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ProcSample {
    /// User plus system CPU time so far, seconds.
    pub cpu_s: f64,
    /// Peak resident set size so far (VmHWM), bytes.
    pub peak_rss_bytes: u64,
}

pub fn sample(pid: u32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("--broker-pid {pid}: reading /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("--broker-pid {pid}: reading /proc/{pid}/status"))?;
    Ok(ProcSample {
        cpu_s: cpu_ticks(&stat)? as f64 / USER_HZ,
        peak_rss_bytes: status_kib(&status, "VmHWM:").unwrap_or(0) * 1024,
    })
}

/// This process's soft limit on open files (`ulimit -n`), from /proc/self/limits.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    soft_limit(&limits, "Max open files")
}

/// The soft limit of one row of a /proc limits file; `None` when unlimited.
pub fn soft_limit(limits: &str, row: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix(row))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// utime + stime (fields 14 and 15) of a `stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
pub fn cpu_ticks(stat: &str) -> Result<u64> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("/proc stat line without a command name"))?;
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = || -> Result<u64> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("/proc stat line too short"))
    };
    Ok(next()? + next()?)
}

/// A `kB` value of `/proc/<pid>/status`.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command() {
        let line = "4242 (ring mq) (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 3 0 100 1000 200";
        assert_eq!(cpu_ticks(line).unwrap(), 325);
        assert!(cpu_ticks("garbage").is_err());
        assert!(cpu_ticks("1 (x) S 1 2").is_err());
    }

    #[test]
    fn status_values() {
        let status = "Name:\tringmq\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(12345));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn limits_rows() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n\
                      Max locked memory         unlimited            unlimited            bytes     \n";
        assert_eq!(soft_limit(limits, "Max open files"), Some(1024));
        assert_eq!(soft_limit(limits, "Max locked memory"), None);
        assert!(open_files_limit().is_some());
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = sample(std::process::id()).unwrap();
        assert!(sample.peak_rss_bytes > 0);
    }
}
