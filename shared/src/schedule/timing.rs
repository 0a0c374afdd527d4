//! When a schedule fires: a cron expression read on the wall clock of an IANA time zone, with
//! EventBridge Scheduler's rules for daylight saving time. A local time that does not exist
//! (spring forward) is skipped; one that occurs twice (fall back) fires once, at its first
//! occurrence. Ticks therefore strictly increase.
//!
//! The expression is parsed by `croner` (5 fields, or 6 with seconds first); the zone comes
//! from the time-zone database compiled into the binary (`jiff`'s bundled tzdb).

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};

use crate::clock::Timestamp;

/// Candidate wall-clock times one search looks at before giving up: enough to step over an
/// hour repeated at fall back for an expression that fires every second.
const MAX_STEPS: usize = 10_000;

/// How far ahead a schedule must fire at least once to be accepted.
const FIRES_WITHIN_YEARS: i16 = 5;

/// A parsed expression in its zone.
#[derive(Debug, Clone)]
pub struct Timing {
    cron: Cron,
    zone: TimeZone,
}

/// Why an expression or a zone was refused; each names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// The cron expression does not parse.
    #[error("{0}")]
    Cron(String),
    /// The zone is not in the time-zone database.
    #[error("{0:?} is not an IANA time zone name (for example UTC, Europe/Berlin)")]
    Zone(String),
    /// The expression matches no time that exists within five years (for example
    /// `0 0 30 2 *`, `0 0 0 31 4 *`).
    #[error("{0:?} never fires (no day matches it within 5 years)")]
    Never(String),
}

impl Timing {
    /// Parses `expression` (5 fields, or 6 with seconds first) in the zone named `zone`.
    pub fn parse(expression: &str, zone: &str) -> Result<Self, TimingError> {
        // The expression is caller input: a parser bug must be a refusal, never a panic.
        std::panic::catch_unwind(|| Self::parse_checked(expression, zone)).unwrap_or_else(|_| {
            Err(TimingError::Cron(
                "could not be read (the parser failed on it)".to_owned(),
            ))
        })
    }

    fn parse_checked(expression: &str, zone: &str) -> Result<Self, TimingError> {
        let fields = expression.split_whitespace().count();
        if !(fields == 5 || fields == 6) {
            return Err(TimingError::Cron(format!(
                "has {fields} fields; give 5 (minute hour day-of-month month day-of-week) or 6 \
                 (seconds first)"
            )));
        }
        let cron =
            parse_cron(expression).map_err(|err| TimingError::Cron(at_fault(expression, err)))?;
        let zone = TimeZone::get(zone).map_err(|_| TimingError::Zone(zone.to_owned()))?;
        let timing = Self { cron, zone };
        // An expression that matches no day (30 February) is refused now, not at every run;
        // the calendar is checked first, since the parser's own search for a next time goes
        // on to the year 5000 (90 ms of CPU for `0 0 0 31 4 *`).
        let now = Timestamp::now_utc();
        if !timing.matches_a_day_within(now, FIRES_WITHIN_YEARS) || timing.next_after(now).is_none()
        {
            return Err(TimingError::Never(expression.to_owned()));
        }
        Ok(timing)
    }

    /// True when some day within `years` from `from` (in the zone) matches the expression's
    /// day-of-month, month and day-of-week fields: one check per calendar day, no search.
    fn matches_a_day_within(&self, from: Timestamp, years: i16) -> bool {
        let Some(start) = to_jiff(from).map(|at| self.zone.to_datetime(at).date()) else {
            return false;
        };
        let Some(end) = start.checked_add(jiff::Span::new().years(years)).ok() else {
            return false;
        };
        let pattern = &self.cron.pattern;
        let mut day = start;
        while day <= end {
            let weekday = match day.weekday() {
                jiff::civil::Weekday::Sunday => croner::Weekday::Sunday,
                jiff::civil::Weekday::Monday => croner::Weekday::Monday,
                jiff::civil::Weekday::Tuesday => croner::Weekday::Tuesday,
                jiff::civil::Weekday::Wednesday => croner::Weekday::Wednesday,
                jiff::civil::Weekday::Thursday => croner::Weekday::Thursday,
                jiff::civil::Weekday::Friday => croner::Weekday::Friday,
                jiff::civil::Weekday::Saturday => croner::Weekday::Saturday,
            };
            let (year, month, date) = (
                i32::from(day.year()),
                u32::from(day.month().unsigned_abs()),
                u32::from(day.day().unsigned_abs()),
            );
            let matched = pattern.month_match(month).unwrap_or(false)
                && pattern
                    .day_match(year, month, date, weekday)
                    .unwrap_or(false);
            if matched {
                return true;
            }
            let Ok(next) = day.tomorrow() else {
                return false;
            };
            day = next;
        }
        false
    }

    /// The first tick strictly after `after`, if the expression fires again.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let instant = to_jiff(after)?;
        let mut civil = self.zone.to_datetime(instant);
        for _ in 0..MAX_STEPS {
            civil = self.cron.find_next_occurrence(&civil, false).ok()?;
            // Skipped: a time in a gap, or the repeat of a time whose first occurrence is past.
            if let Some(at) = self.first_instant(civil) {
                if at > instant {
                    return from_jiff(at);
                }
            }
        }
        None
    }

    /// The latest tick at or before `at`.
    pub fn latest_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        let instant = to_jiff(at)?;
        let mut civil = self.zone.to_datetime(instant);
        // In the second pass of a repeated hour, every wall-clock time of the hour has had its
        // first occurrence: search down from the hour's end, as the first pass read it.
        let ambiguous = self.zone.to_ambiguous_timestamp(civil);
        if let AmbiguousOffset::Fold { before, .. } = ambiguous.offset() {
            if ambiguous.earlier().is_ok_and(|first| first < instant) {
                civil = before.to_datetime(instant);
            }
        }
        let mut inclusive = true;
        for _ in 0..MAX_STEPS {
            civil = self.cron.find_previous_occurrence(&civil, inclusive).ok()?;
            inclusive = false;
            if let Some(tick) = self.first_instant(civil) {
                if tick <= instant {
                    return from_jiff(tick);
                }
            }
        }
        None
    }

    /// The latest ticks at or before `at` and at or after `from`, latest first, at most `max`.
    pub fn ticks_back(&self, from: Timestamp, at: Timestamp, max: usize) -> Vec<Timestamp> {
        let mut ticks = Vec::new();
        let mut cursor = at;
        while ticks.len() < max {
            let Some(tick) = self.latest_at_or_before(cursor) else {
                break;
            };
            if tick < from {
                break;
            }
            ticks.push(tick);
            cursor = tick.minus(std::time::Duration::from_millis(1));
        }
        ticks
    }

    /// The next `count` ticks after `after`.
    pub fn upcoming(&self, after: Timestamp, count: usize) -> Vec<Timestamp> {
        let mut ticks = Vec::with_capacity(count);
        let mut cursor = after;
        while ticks.len() < count {
            let Some(tick) = self.next_after(cursor) else {
                break;
            };
            ticks.push(tick);
            cursor = tick;
        }
        ticks
    }

    /// The instant a wall-clock time first occurs in the zone; `None` in a gap.
    fn first_instant(&self, civil: DateTime) -> Option<jiff::Timestamp> {
        let ambiguous = self.zone.to_ambiguous_timestamp(civil);
        match ambiguous.offset() {
            AmbiguousOffset::Gap { .. } => None,
            AmbiguousOffset::Unambiguous { .. } | AmbiguousOffset::Fold { .. } => {
                ambiguous.earlier().ok()
            }
        }
    }
}

/// Field names in order, for 6 fields; 5 fields drop the first.
const FIELD_NAMES: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

fn parse_cron(expression: &str) -> Result<Cron, croner::errors::CronError> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
}

/// `err` with the field at fault named: each field is tried alone among wildcards, since the
/// parser's own messages ("Number out of bounds") do not say where.
fn at_fault(expression: &str, err: croner::errors::CronError) -> String {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let names = &FIELD_NAMES[FIELD_NAMES.len() - fields.len()..];
    for (index, field) in fields.iter().enumerate() {
        let alone: Vec<&str> = (0..fields.len())
            .map(|i| if i == index { *field } else { "*" })
            .collect();
        if let Err(own) = parse_cron(&alone.join(" ")) {
            return format!("{} field {field:?}: {own}", names[index]);
        }
    }
    err.to_string()
}

fn to_jiff(at: Timestamp) -> Option<jiff::Timestamp> {
    let nanos = at.0.unix_timestamp_nanos();
    let millis = i64::try_from(nanos / 1_000_000).ok()?;
    jiff::Timestamp::from_millisecond(millis).ok()
}

fn from_jiff(at: jiff::Timestamp) -> Option<Timestamp> {
    let nanos = at.as_nanosecond();
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .map(Timestamp::new)
}

#[cfg(test)]
mod tests;
