//! Per-key exponential back-off (CrashLoopBackOff, ImagePullBackOff): 10 s
//! doubling to 5 min, forgotten after 10 min without a failure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Initial back-off.
pub const INITIAL: Duration = Duration::from_secs(10);
/// Maximum back-off.
pub const MAX: Duration = Duration::from_secs(300);
/// A key that has not failed for this long starts again at [`INITIAL`].
pub const RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
struct Entry {
    delay: Duration,
    last: Instant,
}

/// Back-off state for many keys.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(INITIAL, MAX)
    }
}

impl Backoff {
    /// A back-off starting at `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    /// Record a failure of `key` at `now` (from the moment it happened); returns the
    /// new delay.
    pub fn next(&mut self, key: &str, now: Instant) -> Duration {
        let e = self.entries.entry(key.to_string()).or_insert(Entry {
            delay: Duration::ZERO,
            last: now,
        });
        if e.delay.is_zero() || now.saturating_duration_since(e.last) > RESET_AFTER {
            e.delay = self.initial;
        } else {
            e.delay = (e.delay * 2).min(self.max);
        }
        e.last = now;
        e.delay
    }

    /// The current delay of `key` (zero if none).
    pub fn delay(&self, key: &str) -> Duration {
        self.entries.get(key).map(|e| e.delay).unwrap_or_default()
    }

    /// When `key`'s back-off ends, if it is in back-off at `now`.
    pub fn until(&self, key: &str, now: Instant) -> Option<Instant> {
        let e = self.entries.get(key)?;
        let end = e.last + e.delay;
        (end > now).then_some(end)
    }

    /// Whether `key` is still backing off for an event (a failure) that happened
    /// `since_event` ago; returns the current delay if so (upstream's
    /// `IsInBackOffSince`).
    pub fn in_backoff_since(
        &self,
        key: &str,
        now: Instant,
        since_event: Duration,
    ) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if now.saturating_duration_since(e.last) > RESET_AFTER {
            return None;
        }
        (since_event < e.delay).then_some(e.delay)
    }

    /// Forget `key`.
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Forget entries untouched for [`RESET_AFTER`].
    pub fn gc(&mut self, now: Instant) {
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last) <= RESET_AFTER);
    }
}

/// Human form of a back-off delay as upstream prints it (`10s`, `2m40s`, `5m0s`).
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        assert_eq!(b.next("a", t0), Duration::from_secs(10));
        assert_eq!(
            b.next("a", t0 + Duration::from_secs(11)),
            Duration::from_secs(20)
        );
        let mut t = t0 + Duration::from_secs(12);
        for _ in 0..10 {
            b.next("a", t);
            t += Duration::from_secs(1);
        }
        assert_eq!(b.delay("a"), MAX);
        // a long healthy run resets it
        assert_eq!(b.next("a", t + Duration::from_secs(601)), INITIAL);
        assert!(b.until("b", t).is_none());
        let t1 = t + Duration::from_secs(601);
        assert!(b.until("a", t1).is_some());
        assert!(b.until("a", t1 + Duration::from_secs(10)).is_none());
        assert_eq!(
            b.in_backoff_since("a", t1, Duration::from_secs(3)),
            Some(INITIAL)
        );
        assert_eq!(b.in_backoff_since("a", t1, Duration::from_secs(11)), None);
        b.reset("a");
        assert_eq!(b.delay("a"), Duration::ZERO);
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(go_duration(Duration::from_secs(20)), "20s");
        assert_eq!(go_duration(Duration::from_secs(160)), "2m40s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }
}
