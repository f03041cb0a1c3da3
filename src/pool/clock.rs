//! A cheap millisecond clock for pool bookkeeping (connection lifetimes and idle times, checked
//! on every checkout and checkin): the kernel's coarse monotonic clock (a few milliseconds of
//! resolution, read without a system call), kept as plain integers.

use std::time::Duration;

/// Milliseconds on the coarse monotonic clock.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given; this clock always exists on
    // Linux (and on failure `ts` stays zero, which only makes connections look young).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// `d` in whole milliseconds (saturating).
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether a connection opened at `created` has outlived `max_lifetime` (ms) at `now`. A
/// zero lifetime is always outlived: each connection is used once, also when it is given
/// back within the clock's step of a few milliseconds.
pub fn outlived(now: u64, created: u64, max_lifetime: u64) -> bool {
    max_lifetime == 0 || now.saturating_sub(created) > max_lifetime
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_lifetime_is_outlived_at_once() {
        assert!(outlived(100, 100, 0));
        assert!(!outlived(100, 100, 1));
        assert!(!outlived(101, 100, 1));
        assert!(outlived(102, 100, 1));
    }

    #[test]
    fn advances_with_time() {
        let a = now_ms();
        std::thread::sleep(Duration::from_millis(30));
        let b = now_ms();
        assert!(b >= a + 20 && b < a + 5_000, "{a} -> {b}");
        assert_eq!(ms(Duration::from_secs(2)), 2000);
        assert_eq!(ms(Duration::MAX), u64::MAX);
    }
}
