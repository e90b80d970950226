//! Cron schedules for the CronJob controller: the standard 5 fields
//! (minute hour day-of-month month day-of-week, with names, ranges, steps,
//! `*`/`?`), the `@hourly`-style descriptors, `@every <duration>`, and a
//! `CRON_TZ=`/`TZ=` prefix. Semantics follow `robfig/cron/v3` (which upstream
//! uses): when both day fields are restricted, either may match.
//!
//! The API server's validation (`navarch-api`) has already rejected bad
//! schedules with the library's messages; this module evaluates them.

use k8s_openapi::jiff::civil::{Date, DateTime};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, ToSpan};

/// A schedule that cannot be evaluated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    /// The expression is malformed.
    #[error("unparseable schedule {0:?}")]
    Syntax(String),
    /// The time zone is unknown.
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    tz: TimeZone,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Fields {
        minute: u64,
        hour: u64,
        dom: u64,
        month: u64,
        dow: u64,
        /// Either day field was `*`/`?` (then both must match).
        day_star: bool,
    },
    Every(i64),
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Load a time zone by IANA name from the system database (`UTC` built in).
pub fn load_time_zone(name: &str) -> Result<TimeZone, ScheduleError> {
    if name == "UTC" || name == "Etc/UTC" || name.is_empty() {
        return Ok(TimeZone::UTC);
    }
    if name.contains("..") || name.starts_with('/') {
        return Err(ScheduleError::TimeZone(name.into()));
    }
    let dirs = ["/usr/share/zoneinfo", "/usr/lib/zoneinfo", "/etc/zoneinfo"];
    for d in dirs {
        if let Ok(data) = std::fs::read(format!("{d}/{name}")) {
            return TimeZone::tzif(name, &data).map_err(|_| ScheduleError::TimeZone(name.into()));
        }
    }
    Err(ScheduleError::TimeZone(name.into()))
}

impl Schedule {
    /// Parse `spec`, evaluated in `time_zone` (the CronJob's `spec.timeZone`)
    /// unless the spec carries its own `CRON_TZ=` prefix. No zone means UTC
    /// (navarch's controller manager runs in UTC).
    pub fn parse(spec: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let mut spec = spec.trim();
        let mut tz_name = time_zone.map(str::to_string);
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = spec.strip_prefix(prefix) {
                let (z, s) = rest
                    .split_once(' ')
                    .ok_or_else(|| ScheduleError::Syntax(spec.into()))?;
                tz_name = Some(z.to_string());
                spec = s.trim();
            }
        }
        let tz = load_time_zone(tz_name.as_deref().unwrap_or("UTC"))?;
        let err = || ScheduleError::Syntax(spec.to_string());
        let fields = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with("@every ") => {
                let secs = parse_duration(&s["@every ".len()..]).ok_or_else(err)?;
                return Ok(Schedule {
                    tz,
                    kind: Kind::Every(secs.max(1)),
                });
            }
            s => s,
        };
        let f: Vec<&str> = fields.split_whitespace().collect();
        if f.len() != 5 {
            return Err(err());
        }
        let minute = parse_field(f[0], 0, 59, &[]).ok_or_else(err)?;
        let hour = parse_field(f[1], 0, 23, &[]).ok_or_else(err)?;
        let dom = parse_field(f[2], 1, 31, &[]).ok_or_else(err)?;
        let month = parse_field(f[3], 1, 12, &MONTHS).ok_or_else(err)?;
        let mut dow = parse_field(f[4], 0, 7, &DAYS).ok_or_else(err)?;
        if dow & (1 << 7) != 0 {
            dow |= 1;
        }
        let star = |s: &str| s.starts_with('*') || s.starts_with('?');
        Ok(Schedule {
            tz,
            kind: Kind::Fields {
                minute,
                hour,
                dom,
                month,
                dow,
                day_star: star(f[2]) || star(f[4]),
            },
        })
    }

    /// The time zone the schedule is evaluated in.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The first fire time strictly after `after` (None if none within 5 years).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let (minute, hour, dom, month, dow, day_star) = match &self.kind {
            Kind::Every(s) => {
                // robfig: next = after + d, truncated to whole seconds.
                return Timestamp::from_second(after.as_second() + s).ok();
            }
            Kind::Fields {
                minute,
                hour,
                dom,
                month,
                dow,
                day_star,
            } => (*minute, *hour, *dom, *month, *dow, *day_star),
        };
        let start = after.to_zoned(self.tz.clone()).datetime();
        // Start at the next whole minute.
        let mut t = DateTime::from_parts(
            start.date(),
            start
                .time()
                .with()
                .second(0)
                .subsec_nanosecond(0)
                .build()
                .ok()?,
        )
        .checked_add(1.minute())
        .ok()?;
        let limit = start.year() + 5;
        let bit = |set: u64, v: i8| set & (1u64 << u32::try_from(v).unwrap_or(63)) != 0;
        while t.year() <= limit {
            if !bit(month, t.month()) {
                let first = Date::new(t.year(), t.month(), 1).ok()?;
                t = first
                    .checked_add(1.month())
                    .ok()?
                    .to_datetime(Default::default());
                continue;
            }
            let dom_ok = bit(dom, t.day());
            let dow_ok = bit(dow, t.weekday().to_sunday_zero_offset());
            let day_ok = if day_star {
                dom_ok && dow_ok
            } else {
                dom_ok || dow_ok
            };
            if !day_ok {
                t = t
                    .date()
                    .checked_add(1.day())
                    .ok()?
                    .to_datetime(Default::default());
                continue;
            }
            if !bit(hour, t.hour()) {
                t = DateTime::from_parts(t.date(), Default::default())
                    .checked_add(i64::from(t.hour() + 1).hours())
                    .ok()?;
                continue;
            }
            if !bit(minute, t.minute()) {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            let ts = self.tz.to_ambiguous_zoned(t).compatible().ok()?.timestamp();
            if ts > after {
                return Some(ts);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }

    /// The latest fire time in `(earliest, now]` and how many there were
    /// (counting stops at `cap`).
    pub fn most_recent(
        &self,
        earliest: Timestamp,
        now: Timestamp,
        cap: usize,
    ) -> (Option<Timestamp>, usize) {
        let mut last = None;
        let mut n = 0;
        let mut t = earliest;
        while let Some(next) = self.next_after(t) {
            if next > now {
                break;
            }
            last = Some(next);
            n += 1;
            if n >= cap {
                // Too many missed: jump to the latest one before `now`.
                let mut probe = now.checked_sub(1.hour()).unwrap_or(now).max(next);
                while let Some(x) = self.next_after(probe) {
                    if x > now {
                        break;
                    }
                    last = Some(x);
                    probe = x;
                }
                break;
            }
            t = next;
        }
        (last, n)
    }
}

/// A Go duration such as `1h30m` or `90s`, in whole seconds.
fn parse_duration(s: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let (mult, len) = [("ms", 0.001), ("h", 3600.0), ("m", 60.0), ("s", 1.0)]
            .iter()
            .find(|(u, _)| rest.starts_with(u))
            .map(|(u, m)| (*m, u.len()))?;
        total += num * mult;
        rest = &rest[len..];
    }
    Some(total as i64)
}

fn parse_value(s: &str, names: &[&str]) -> Option<i64> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        let base = if names.len() == 12 { 1 } else { 0 };
        return i64::try_from(i).ok().map(|i| i + base);
    }
    s.parse().ok()
}

fn parse_field(field: &str, min: i64, max: i64, names: &[&str]) -> Option<u64> {
    let mut bits = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s.parse::<i64>().ok().filter(|s| *s > 0)?)),
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (parse_value(a, names)?, parse_value(b, names)?)
        } else {
            let v = parse_value(range, names)?;
            (v, if step.is_some() { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return None;
        }
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Some(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn every_minute() {
        let s = Schedule::parse("*/1 * * * *", None).unwrap();
        assert_eq!(
            s.next_after(ts("2024-01-01T10:00:30Z")),
            Some(ts("2024-01-01T10:01:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2024-01-01T10:01:00Z")),
            Some(ts("2024-01-01T10:02:00Z"))
        );
    }

    #[test]
    fn fields_and_descriptors() {
        let s = Schedule::parse("30 2 * * mon-fri", None).unwrap();
        // 2024-01-06 is a Saturday.
        assert_eq!(
            s.next_after(ts("2024-01-06T00:00:00Z")),
            Some(ts("2024-01-08T02:30:00Z"))
        );
        let h = Schedule::parse("@hourly", None).unwrap();
        assert_eq!(
            h.next_after(ts("2024-01-01T10:59:59Z")),
            Some(ts("2024-01-01T11:00:00Z"))
        );
        let y = Schedule::parse("@yearly", None).unwrap();
        assert_eq!(
            y.next_after(ts("2024-03-01T00:00:00Z")),
            Some(ts("2025-01-01T00:00:00Z"))
        );
        // Both day fields restricted: either matches (the 13th or a Friday).
        let d = Schedule::parse("0 0 13 * 5", None).unwrap();
        assert_eq!(
            d.next_after(ts("2024-01-01T00:00:00Z")),
            Some(ts("2024-01-05T00:00:00Z"))
        );
        let e = Schedule::parse("@every 1h30m", None).unwrap();
        assert_eq!(
            e.next_after(ts("2024-01-01T00:00:00Z")),
            Some(ts("2024-01-01T01:30:00Z"))
        );
        assert!(Schedule::parse("61 * * * *", None).is_err());
        assert!(Schedule::parse("* * *", None).is_err());
        assert_eq!(
            Schedule::parse("0 0 * * *", Some("Mars/Olympus")).unwrap_err(),
            ScheduleError::TimeZone("Mars/Olympus".into())
        );
        // Impossible dates never fire.
        let never = Schedule::parse("0 0 30 2 *", None).unwrap();
        assert_eq!(never.next_after(ts("2024-01-01T00:00:00Z")), None);
    }

    #[test]
    fn time_zones() {
        if load_time_zone("America/New_York").is_err() {
            return; // no tz database on this machine
        }
        let s = Schedule::parse("CRON_TZ=America/New_York 0 9 * * *", None).unwrap();
        assert_eq!(
            s.next_after(ts("2024-01-01T00:00:00Z")),
            Some(ts("2024-01-01T14:00:00Z"))
        );
        let s = Schedule::parse("0 9 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            s.next_after(ts("2024-07-01T00:00:00Z")),
            Some(ts("2024-07-01T13:00:00Z"))
        );
    }

    #[test]
    fn most_recent_counts_missed() {
        let s = Schedule::parse("*/10 * * * *", None).unwrap();
        let (last, n) = s.most_recent(ts("2024-01-01T00:00:00Z"), ts("2024-01-01T00:35:00Z"), 100);
        assert_eq!((last, n), (Some(ts("2024-01-01T00:30:00Z")), 3));
        let (last, n) = s.most_recent(ts("2024-01-01T00:30:00Z"), ts("2024-01-01T00:35:00Z"), 100);
        assert_eq!((last, n), (None, 0));
        let m = Schedule::parse("* * * * *", None).unwrap();
        let (last, n) = m.most_recent(ts("2024-01-01T00:00:00Z"), ts("2024-01-02T00:00:30Z"), 100);
        assert_eq!((last, n), (Some(ts("2024-01-02T00:00:00Z")), 100));
    }
}
