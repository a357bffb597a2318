//! Cron schedules: crontab syntax (5 fields, or 6 with seconds first), read
//! in an IANA timezone, with one rule for daylight-saving changes.
//!
//! Occurrences are computed on the local wall clock and then placed in time:
//! - a local time that happens twice (clocks go back) runs once, at its first
//!   instant;
//! - a local time that does not exist (clocks go forward) runs at the instant
//!   it would have had before the change (02:30 becomes 03:30 new time), so
//!   it is neither skipped nor run twice.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed schedule in its timezone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: cron::Schedule,
    timezone: Tz,
}

impl Schedule {
    /// Parses `expression` (crontab fields: minute hour day-of-month month
    /// day-of-week, with an optional seconds field first) in `timezone` (an
    /// IANA name such as `Europe/Paris`; `UTC` when absent).
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<Self, String> {
        let timezone = match timezone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| {
                format!("`{name}` is not an IANA timezone name (such as `Europe/Paris`)")
            })?,
        };
        let cron = cron::Schedule::from_str(&to_six_fields(expression)?)
            .map_err(|e| format!("`{expression}` is not a cron schedule: {e}"))?;
        Ok(Schedule { cron, timezone })
    }

    /// The first occurrence strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut local = after.with_timezone(&self.timezone).naive_local();
        // While clocks go back, local times repeat: candidates placed at their
        // first instant can fall before `after`; move past them. An hour of a
        // schedule with seconds is the most there can be.
        for _ in 0..4000 {
            let naive = self
                .cron
                .after(&Utc.from_utc_datetime(&local))
                .next()?
                .naive_utc();
            let instant = self.place(naive)?;
            if instant > after {
                return Some(instant);
            }
            local = naive;
        }
        None
    }

    /// The next `n` occurrences after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = after;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// The instant of a local wall-clock time, by the rule above.
    fn place(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.timezone.from_local_datetime(&local) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
            LocalResult::None => {
                let day_before = self
                    .timezone
                    .from_local_datetime(&(local - Duration::days(1)))
                    .earliest()?;
                let offset = day_before.offset().fix().local_minus_utc();
                Some(Utc.from_utc_datetime(&(local - Duration::seconds(offset.into()))))
            }
        }
    }
}

/// The 6-field form the `cron` crate reads. It counts weekdays from Sunday =
/// 1; crontab from Sunday = 0 (7 is Sunday too), which is what users write.
fn to_six_fields(expression: &str) -> Result<String, String> {
    let mut fields: Vec<String> = expression.split_whitespace().map(String::from).collect();
    match fields.len() {
        5 => fields.insert(0, "0".into()),
        6 => {}
        _ => {
            return Err(format!(
                "`{expression}` has {} fields; a schedule has 5 (minute hour day month weekday) or 6 (seconds first)",
                fields.len()
            ));
        }
    }
    fields[5] =
        crontab_weekdays(&fields[5]).map_err(|e| format!("`{expression}`: weekday field: {e}"))?;
    Ok(fields.join(" "))
}

/// Renumbers the numeric weekdays of a crontab weekday field (0-7, Sunday 0
/// or 7) to the `cron` crate's (1-7, Sunday 1). Names and `*` stay.
fn crontab_weekdays(field: &str) -> Result<String, String> {
    let mut out = Vec::new();
    for item in field.split(',') {
        if item.starts_with('*') || item == "?" || item.chars().any(|c| c.is_ascii_alphabetic()) {
            out.push(item.to_string());
            continue;
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (
                range,
                step.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("`{step}` is not a step"))?,
            ),
            None => (item, 1),
        };
        let day = |s: &str| {
            s.parse::<u32>()
                .ok()
                .filter(|d| *d <= 7)
                .ok_or_else(|| format!("`{s}` is not a weekday (0-7, Sunday is 0 or 7, or a name)"))
        };
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (day(a)?, day(b)?),
            None if step > 1 => (day(range)?, 7),
            None => {
                let d = day(range)?;
                (d, d)
            }
        };
        if first > last {
            return Err(format!("`{item}` runs backwards"));
        }
        for d in (first..=last).step_by(step as usize) {
            let quartz = if d == 7 { 1 } else { d + 1 };
            if !out.contains(&quartz.to_string()) {
                out.push(quartz.to_string());
            }
        }
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Weekday};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_fields_run_at_second_zero_and_six_fields_take_seconds() {
        let every_minute = Schedule::parse("* * * * *", None).unwrap();
        assert_eq!(
            every_minute.next_after(at("2026-01-01T00:00:10Z")),
            Some(at("2026-01-01T00:01:00Z"))
        );
        let every_2s = Schedule::parse("*/2 * * * * *", None).unwrap();
        assert_eq!(
            every_2s.upcoming(at("2026-01-01T00:00:01Z"), 2),
            vec![at("2026-01-01T00:00:02Z"), at("2026-01-01T00:00:04Z")]
        );
    }

    #[test]
    fn weekdays_count_from_sunday_zero_as_in_crontab() {
        let wednesday = at("2026-06-17T12:00:00Z");
        let next_day = |expr: &str| {
            Schedule::parse(expr, None)
                .unwrap()
                .next_after(wednesday)
                .unwrap()
                .weekday()
        };
        assert_eq!(next_day("0 9 * * 0"), Weekday::Sun);
        assert_eq!(next_day("0 9 * * 7"), Weekday::Sun);
        assert_eq!(next_day("0 9 * * 1"), Weekday::Mon);
        assert_eq!(next_day("0 9 * * 6"), Weekday::Sat);
        assert_eq!(next_day("0 9 * * SAT"), Weekday::Sat);
        let weekdays = Schedule::parse("0 9 * * 1-5", None).unwrap();
        let days: Vec<_> = weekdays
            .upcoming(wednesday, 5)
            .iter()
            .map(|t| t.weekday())
            .collect();
        assert_eq!(
            days,
            [
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed
            ]
        );
    }

    #[test]
    fn bad_expressions_and_timezones_are_refused_with_a_reason() {
        for (expr, tz, needle) in [
            ("* * * *", None, "4 fields"),
            ("61 * * * *", None, "not a cron schedule"),
            ("0 9 * * 8", None, "not a weekday"),
            ("0 9 * * 5-1", None, "backwards"),
            ("0 9 * * *", Some("Mars/Olympus"), "not an IANA timezone"),
        ] {
            let err = Schedule::parse(expr, tz).unwrap_err();
            assert!(err.contains(needle), "{expr}: {err}");
        }
    }

    #[test]
    fn a_timezone_places_local_times() {
        let paris = Schedule::parse("0 9 * * *", Some("Europe/Paris")).unwrap();
        // 09:00 in Paris in winter is 08:00 UTC; in summer 07:00 UTC.
        assert_eq!(
            paris.next_after(at("2026-01-10T00:00:00Z")),
            Some(at("2026-01-10T08:00:00Z"))
        );
        assert_eq!(
            paris.next_after(at("2026-07-10T00:00:00Z")),
            Some(at("2026-07-10T07:00:00Z"))
        );
    }

    #[test]
    fn a_local_time_skipped_by_dst_runs_once_an_hour_later() {
        // New York springs forward on 2026-03-08: 02:00 EST becomes 03:00 EDT.
        let ny = Schedule::parse("30 2 * * *", Some("America/New_York")).unwrap();
        let runs = ny.upcoming(at("2026-03-07T00:00:00Z"), 3);
        // 02:30 EST = 07:30 UTC on the 7th; on the 8th 02:30 does not exist and
        // runs at 07:30 UTC (03:30 EDT); on the 9th 02:30 EDT = 06:30 UTC.
        assert_eq!(
            runs,
            vec![
                at("2026-03-07T07:30:00Z"),
                at("2026-03-08T07:30:00Z"),
                at("2026-03-09T06:30:00Z")
            ]
        );
    }

    #[test]
    fn a_local_time_that_happens_twice_runs_once() {
        // New York falls back on 2026-11-01: 01:59 EDT is followed by 01:00 EST.
        let ny = Schedule::parse("30 1 * * *", Some("America/New_York")).unwrap();
        let runs = ny.upcoming(at("2026-10-31T12:00:00Z"), 3);
        assert_eq!(
            runs,
            vec![
                at("2026-11-01T05:30:00Z"),
                at("2026-11-02T06:30:00Z"),
                at("2026-11-03T06:30:00Z")
            ],
            "01:30 runs at its first instant (EDT) only"
        );
        // An hourly schedule does not repeat the hour that happens twice.
        let hourly = Schedule::parse("0 * * * *", Some("America/New_York")).unwrap();
        let hours: Vec<_> = hourly
            .upcoming(at("2026-11-01T04:30:00Z"), 3)
            .iter()
            .map(|t| {
                (
                    t.hour(),
                    t.with_timezone(&chrono_tz::America::New_York).hour(),
                )
            })
            .collect();
        assert_eq!(hours, [(5, 1), (7, 2), (8, 3)]);
    }
}
