//! The one clock of the process: nanoseconds since a process-wide epoch.
//!
//! Publishers and subscribers run in the same process, on different threads, so a
//! monotonic `Instant` taken once and shared by all of them gives send and receive
//! times that can be subtracted directly, with no clock skew to correct.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The epoch; the first caller fixes it.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`]. Fits a `u64` for 584 years.
pub fn now_ns() -> u64 {
    as_ns(epoch().elapsed())
}

/// A duration in nanoseconds, saturating.
pub fn as_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// How long from now until `at_ns` (zero if it has passed).
pub fn until(at_ns: u64) -> Duration {
    Duration::from_nanos(at_ns.saturating_sub(now_ns()))
}
