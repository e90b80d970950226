//! Upstream's `duration.HumanDuration`: a short, 2–3 significant figure
//! rendering of an age ("45s", "5m3s", "2h10m", "3d4h", "2y15d").

use chrono::Duration;

/// Render `d` as upstream's `duration.HumanDuration` does.
///
/// Up to one second in the future counts as "now" (clock skew); further in
/// the future is `<invalid>`. Then: under 2 minutes `Ns`; under 10 minutes
/// `MmSs` (seconds dropped when zero); under 3 hours `Mm`; under 8 hours
/// `HhMm`; under 2 days `Hh`; under 8 days `DdHh`; under 2 years `Dd`; under
/// 8 years `YyDd`; else `Yy`. Every unit is truncated, never rounded.
pub fn human_duration(d: Duration) -> String {
    // Whole seconds, truncated towards zero like Go's int(d.Seconds()).
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let dy = days % 365;
        return if dy == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dy}d")
        };
    }
    format!("{years}y")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: i64) -> Duration {
        Duration::seconds(secs)
    }

    #[test]
    fn matches_upstream_boundaries() {
        let cases: &[(Duration, &str)] = &[
            (Duration::milliseconds(-2500), "<invalid>"),
            (s(-2), "<invalid>"),
            (Duration::milliseconds(-1999), "0s"),
            (s(-1), "0s"),
            (s(0), "0s"),
            (Duration::milliseconds(999), "0s"),
            (s(1), "1s"),
            (s(59), "59s"),
            (s(60), "60s"),
            (s(119), "119s"),
            (s(120), "2m"),
            (s(121), "2m1s"),
            (s(5 * 60 + 3), "5m3s"),
            (s(9 * 60 + 59), "9m59s"),
            (s(10 * 60), "10m"),
            (s(10 * 60 + 59), "10m"),
            (s(179 * 60 + 59), "179m"),
            (s(3 * 3600), "3h"),
            (s(3 * 3600 + 60), "3h1m"),
            (s(7 * 3600 + 59 * 60 + 59), "7h59m"),
            (s(8 * 3600), "8h"),
            (s(8 * 3600 + 59 * 60), "8h"),
            (s(47 * 3600 + 3599), "47h"),
            (s(48 * 3600), "2d"),
            (s(49 * 3600), "2d1h"),
            (s(7 * 86400 + 23 * 3600), "7d23h"),
            (s(8 * 86400), "8d"),
            (s(365 * 86400), "365d"),
            (s(2 * 365 * 86400 - 1), "729d"),
            (s(2 * 365 * 86400), "2y"),
            (s(2 * 365 * 86400 + 86400), "2y1d"),
            (s(7 * 365 * 86400 + 364 * 86400), "7y364d"),
            (s(8 * 365 * 86400), "8y"),
            (s(8 * 365 * 86400 + 200 * 86400), "8y"),
            (s(20 * 365 * 86400), "20y"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(*d), *want, "duration {d:?}");
        }
    }
}
