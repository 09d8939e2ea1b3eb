//! Failed CONNECTs per source address, shared by every shard.
//!
//! Each address has a window that opens at its first failure and lasts `window`;
//! once `failures_max` failures fall inside it, the address is blocked until the
//! window ends. So an address gets at most `failures_max` password checks per
//! window, whatever it tries. A success clears the address.
//!
//! Addresses are grouped as an attacker would hold them: an IPv4 address alone,
//! an IPv4-mapped IPv6 address as its IPv4 address, any other IPv6 address by its
//! /64 (one host usually owns a whole /64).
//!
//! The table holds at most `addresses_max` addresses. Expired windows are dropped
//! first; when it is still full, the address whose window opened first is evicted
//! (its block ends early). Opening order is kept in a queue, so eviction costs
//! O(1) amortised, never a scan of the table under the lock.
//!
//! Hand-written rather than `governor`: governor refills a quota continuously
//! (no "blocked until the window ends") and its keyed store grows until the
//! caller prunes it; this is the fixed-size table that the broker needs, in a
//! few dozen lines. A `Mutex` suffices: only a CONNECT with a password takes it.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// See the [module documentation](self).
#[derive(Debug)]
pub struct FailedLoginLimiter {
    failures_max: u32,
    window: Duration,
    addresses_max: usize,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    windows: HashMap<IpAddr, Window>,
    /// (address, window start) in the order windows opened; records of windows
    /// since reopened or removed are stale and skipped.
    opened: VecDeque<(IpAddr, Instant)>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    failures: u32,
}

impl FailedLoginLimiter {
    /// `failures_max` failures inside `window` block an address (0 behaves as 1:
    /// the first failure blocks); the table holds at most `addresses_max`
    /// addresses (0: nothing is tracked, nothing blocked).
    pub fn new(failures_max: u32, window: Duration, addresses_max: usize) -> FailedLoginLimiter {
        FailedLoginLimiter {
            failures_max,
            window,
            addresses_max,
            table: Mutex::new(Table::default()),
        }
    }

    /// Whether `ip` has used up its failures for the current window.
    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        let table = self.lock();
        table
            .windows
            .get(&group(ip))
            .is_some_and(|w| w.failures >= self.failures_max && self.is_open(w.start, now))
    }

    /// Counts one failed login from `ip` at `now`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        if self.addresses_max == 0 {
            return;
        }
        let key = group(ip);
        let mut table = self.lock();
        if let Some(window) = table.windows.get_mut(&key) {
            if self.is_open(window.start, now) {
                window.failures = window.failures.saturating_add(1);
                return;
            }
            window.start = now;
            window.failures = 1;
        } else {
            self.make_room(&mut table, now);
            table.windows.insert(
                key,
                Window {
                    start: now,
                    failures: 1,
                },
            );
        }
        table.opened.push_back((key, now));
        self.compact(&mut table);
    }

    /// Clears `ip` after a successful login.
    pub fn record_success(&self, ip: IpAddr) {
        self.lock().windows.remove(&group(ip));
    }

    /// Addresses tracked now (at most `addresses_max`).
    pub fn len(&self) -> usize {
        self.lock().windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn is_open(&self, start: Instant, now: Instant) -> bool {
        // Shards read their clocks at slightly different moments: a `now` a little
        // before `start` counts as inside the window.
        now.saturating_duration_since(start) < self.window
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while the lock is held with the table half-changed, so a
        // poisoned lock still guards a consistent table.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops expired windows from the front, then evicts the oldest while full.
    fn make_room(&self, table: &mut Table, now: Instant) {
        while let Some(&(key, start)) = table.opened.front() {
            let live = table.windows.get(&key).is_some_and(|w| w.start == start);
            let full = table.windows.len() >= self.addresses_max;
            if live && !full && self.is_open(start, now) {
                break;
            }
            table.opened.pop_front();
            if live {
                table.windows.remove(&key);
            }
        }
    }

    /// Keeps stale records from outgrowing the table.
    fn compact(&self, table: &mut Table) {
        if table.opened.len() <= self.addresses_max.saturating_mul(2).saturating_add(64) {
            return;
        }
        let Table { windows, opened } = table;
        opened.retain(|(key, start)| windows.get(key).is_some_and(|w| w.start == *start));
    }
}

/// The key an address is counted under (see the module documentation).
fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const WINDOW: Duration = Duration::from_secs(60);

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn blocks_after_failures_max_inside_the_window_then_unblocks() {
        let limiter = FailedLoginLimiter::new(3, WINDOW, 100);
        let t0 = Instant::now();
        for n in 0..3 {
            assert!(!limiter.is_blocked(v4(1), t0), "blocked after {n} failures");
            limiter.record_failure(v4(1), t0 + Duration::from_secs(n));
        }
        assert!(limiter.is_blocked(v4(1), t0 + Duration::from_secs(3)));
        assert!(
            !limiter.is_blocked(v4(2), t0),
            "other addresses are not affected"
        );
        assert!(limiter.is_blocked(v4(1), t0 + WINDOW - Duration::from_millis(1)));
        assert!(
            !limiter.is_blocked(v4(1), t0 + WINDOW),
            "the window is over"
        );
        // A new window starts with the next failure.
        limiter.record_failure(v4(1), t0 + WINDOW);
        assert!(!limiter.is_blocked(v4(1), t0 + WINDOW));
    }

    #[test]
    fn failures_spread_over_windows_do_not_block() {
        let limiter = FailedLoginLimiter::new(3, WINDOW, 100);
        let t0 = Instant::now();
        for n in 0..10u32 {
            limiter.record_failure(v4(1), t0 + WINDOW * n / 2);
            assert!(
                !limiter.is_blocked(v4(1), t0 + WINDOW * n / 2),
                "failure {n}"
            );
        }
    }

    #[test]
    fn success_clears_the_address() {
        let limiter = FailedLoginLimiter::new(2, WINDOW, 100);
        let t0 = Instant::now();
        limiter.record_failure(v4(1), t0);
        limiter.record_success(v4(1));
        limiter.record_failure(v4(1), t0);
        assert!(!limiter.is_blocked(v4(1), t0));
        limiter.record_failure(v4(1), t0);
        assert!(limiter.is_blocked(v4(1), t0));
        limiter.record_success(v4(1));
        assert!(!limiter.is_blocked(v4(1), t0));
        assert!(limiter.is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_oldest_window() {
        let limiter = FailedLoginLimiter::new(1, WINDOW, 3);
        let t0 = Instant::now();
        for last in 1..=3 {
            limiter.record_failure(v4(last), t0 + Duration::from_secs(u64::from(last)));
        }
        assert_eq!(limiter.len(), 3);
        limiter.record_failure(v4(4), t0 + Duration::from_secs(4));
        assert_eq!(limiter.len(), 3);
        let now = t0 + Duration::from_secs(5);
        assert!(!limiter.is_blocked(v4(1), now), "the oldest was evicted");
        for last in 2..=4 {
            assert!(limiter.is_blocked(v4(last), now), "{last} kept");
        }
        // Many addresses later the table is still at its limit, stale records too.
        for n in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            limiter.record_failure(ip, now);
            if n % 3 == 0 {
                limiter.record_success(ip);
            }
        }
        assert!(limiter.len() <= 3);
        assert!(limiter.lock().opened.len() <= 3 * 2 + 64 + 1);
    }

    #[test]
    fn expired_windows_leave_before_the_table_is_full() {
        let limiter = FailedLoginLimiter::new(1, WINDOW, 3);
        let t0 = Instant::now();
        limiter.record_failure(v4(1), t0);
        limiter.record_failure(v4(2), t0 + WINDOW - Duration::from_secs(1));
        limiter.record_failure(v4(3), t0 + WINDOW);
        let now = t0 + WINDOW;
        assert_eq!(
            limiter.len(),
            2,
            "1's window had ended: dropped, though there was room"
        );
        assert!(limiter.is_blocked(v4(2), now), "live window kept");
        assert!(limiter.is_blocked(v4(3), now));
    }

    #[test]
    fn reopened_windows_keep_their_place_in_the_eviction_order() {
        let limiter = FailedLoginLimiter::new(1, WINDOW, 2);
        let t0 = Instant::now();
        limiter.record_failure(v4(1), t0);
        limiter.record_failure(v4(2), t0 + Duration::from_secs(30));
        // 1's window ends and reopens: it is now younger than 2's.
        let t1 = t0 + WINDOW + Duration::from_secs(1);
        limiter.record_failure(v4(1), t1);
        limiter.record_failure(v4(3), t1);
        assert!(limiter.is_blocked(v4(1), t1));
        assert!(!limiter.is_blocked(v4(2), t1), "2 was the oldest");
        assert!(limiter.is_blocked(v4(3), t1));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let limiter = FailedLoginLimiter::new(2, WINDOW, 100);
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        limiter.record_failure(a, t0);
        limiter.record_failure(b, t0);
        assert!(limiter.is_blocked(a, t0));
        assert!(limiter.is_blocked(b, t0));
        assert!(!limiter.is_blocked(other, t0));

        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        limiter.record_failure(mapped, t0);
        limiter.record_failure(v4(7), t0);
        assert!(limiter.is_blocked(v4(7), t0));
        assert!(limiter.is_blocked(mapped, t0));
    }

    #[test]
    fn edge_settings() {
        let t0 = Instant::now();
        let none = FailedLoginLimiter::new(3, WINDOW, 0);
        for _ in 0..10 {
            none.record_failure(v4(1), t0);
        }
        assert!(!none.is_blocked(v4(1), t0));
        assert!(none.is_empty());

        let zero = FailedLoginLimiter::new(0, WINDOW, 10);
        assert!(!zero.is_blocked(v4(1), t0), "no failure yet");
        zero.record_failure(v4(1), t0);
        assert!(zero.is_blocked(v4(1), t0));

        // A clock read a moment earlier by another shard is inside the window.
        let limiter = FailedLoginLimiter::new(1, WINDOW, 10);
        limiter.record_failure(v4(1), t0 + Duration::from_secs(1));
        assert!(limiter.is_blocked(v4(1), t0));
    }

    #[test]
    fn shared_between_threads() {
        let limiter = std::sync::Arc::new(FailedLoginLimiter::new(400, WINDOW, 10));
        let t0 = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        limiter.record_failure(v4(1), t0);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(limiter.is_blocked(v4(1), t0), "every failure counted");
    }
}
