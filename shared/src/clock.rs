//! Time: a millisecond-precision UTC timestamp with one fixed-width text form, and an injectable clock.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// A UTC instant truncated to milliseconds.
///
/// Its text form (`2026-11-27T20:10:38.123Z`) has a fixed width, so text order is time order:
/// both stores compare timestamps as strings in their indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub OffsetDateTime);

impl Timestamp {
    /// Truncates `instant` to milliseconds and converts it to UTC.
    pub fn new(instant: OffsetDateTime) -> Self {
        let utc = instant.to_offset(UtcOffset::UTC);
        let millis = utc.millisecond();
        Self(utc.replace_millisecond(millis).unwrap_or(utc))
    }

    /// The current time from the system clock.
    pub fn now_utc() -> Self {
        Self::new(OffsetDateTime::now_utc())
    }

    /// The latest instant Tasker stores: 9999-12-31T23:59:59.999Z.
    pub const MAX: Self = Self(time::macros::datetime!(9999-12-31 23:59:59.999 UTC));
    /// The earliest instant Tasker stores: the Unix epoch.
    pub const MIN: Self = Self(OffsetDateTime::UNIX_EPOCH);

    /// This instant plus `duration`, saturating at [`Timestamp::MAX`].
    pub fn plus(self, duration: Duration) -> Self {
        match self.0.checked_add(to_time(duration)) {
            Some(later) => Self::new(later).min(Self::MAX),
            None => Self::MAX,
        }
    }

    /// This instant minus `duration`, saturating at [`Timestamp::MIN`].
    pub fn minus(self, duration: Duration) -> Self {
        match self.0.checked_sub(to_time(duration)) {
            Some(earlier) => Self::new(earlier).max(Self::MIN),
            None => Self::MIN,
        }
    }

    /// Time from `earlier` to this instant; zero when `earlier` is later.
    pub fn since(self, earlier: Self) -> Duration {
        Duration::try_from(self.0 - earlier.0).unwrap_or(Duration::ZERO)
    }

    /// Seconds since the Unix epoch, as DynamoDB TTL wants them.
    pub fn unix_seconds(self) -> i64 {
        self.0.unix_timestamp()
    }

    /// The fixed-width text form.
    pub fn to_text(self) -> String {
        let t = self.0;
        let Ok(year) = u32::try_from(t.year()) else {
            return t.to_string();
        };
        if year > 9999 {
            return t.to_string();
        }
        // By hand: every claim and outcome writes several, and the format description's
        // interpreter was a twentieth of a drain's time.
        let mut out = String::with_capacity(24);
        for (value, width, after) in [
            (year, 4, '-'),
            (u32::from(u8::from(t.month())), 2, '-'),
            (u32::from(t.day()), 2, 'T'),
            (u32::from(t.hour()), 2, ':'),
            (u32::from(t.minute()), 2, ':'),
            (u32::from(t.second()), 2, '.'),
            (u32::from(t.millisecond()), 3, 'Z'),
        ] {
            for place in (0..width).rev() {
                let digit = value / 10u32.pow(place) % 10;
                out.push(char::from_digit(digit, 10).unwrap_or('0'));
            }
            out.push(after);
        }
        out
    }
}

fn to_time(duration: Duration) -> time::Duration {
    time::Duration::try_from(duration).unwrap_or(time::Duration::MAX)
}

/// The text is not a timestamp Tasker accepts (the offending text, cut to 64 characters).
#[derive(Debug, thiserror::Error)]
pub enum InvalidTimestamp {
    /// Not RFC 3339.
    #[error("not an RFC 3339 timestamp: {0:?}")]
    Format(String),
    /// RFC 3339, but its year (as written) is before 1970.
    #[error("before the year 1970: {0:?}")]
    OutOfRange(String),
}

impl InvalidTimestamp {
    /// The rule the text broke, worded to follow "must be" (the API's and the CLI's message).
    pub fn rule(&self) -> &'static str {
        match self {
            Self::Format(_) => "an RFC 3339 timestamp such as 2026-01-31T09:30:00Z",
            Self::OutOfRange(_) => {
                "in the year 1970 or later (the instants Tasker stores start at the Unix epoch)"
            }
        }
    }
}

impl FromStr for Timestamp {
    type Err = InvalidTimestamp;

    /// Accepts any RFC 3339 timestamp (any offset, any precision) whose year, as written, is
    /// 1970 or later (RFC 3339 years end at 9999). An offset that carries the instant past
    /// either end of the stored range ([`Timestamp::MIN`], [`Timestamp::MAX`]: at most a day)
    /// is clamped to that end, so the rule on the text is the whole rule.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match stored_form(s) {
            Some(at) => Ok(at),
            None => parse_rfc3339(s),
        }
    }
}

/// `s` read as the stored text form (`2026-11-27T20:10:38.123Z`), by hand: the stores read
/// several per task, and the general parser was a tenth of a drain. `None` for anything else
/// (the general parser then decides), including a leap second and years before 1970.
fn stored_form(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() != 24 || b[23] != b'Z' {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u16> {
        b[from..to].iter().try_fold(0u16, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u16::from(c - b'0'))
        })
    };
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ];
    if separators.iter().any(|(at, c)| b[*at] != *c) {
        return None;
    }
    let year = number(0, 4).filter(|y| *y >= 1970)?;
    let month = time::Month::try_from(u8::try_from(number(5, 7)?).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::from(year), month, u8::try_from(number(8, 10)?).ok()?)
            .ok()?;
    let clock = time::Time::from_hms_milli(
        u8::try_from(number(11, 13)?).ok()?,
        u8::try_from(number(14, 16)?).ok()?,
        u8::try_from(number(17, 19)?).ok()?,
        number(20, 23)?,
    )
    .ok()?;
    Some(Timestamp(
        time::PrimitiveDateTime::new(date, clock).assume_utc(),
    ))
}

/// `s` read by the general RFC 3339 parser; see [`Timestamp::from_str`].
fn parse_rfc3339(s: &str) -> Result<Timestamp, InvalidTimestamp> {
    let parsed = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|_| InvalidTimestamp::Format(s.chars().take(64).collect()))?;
    if parsed.year() < 1970 {
        return Err(InvalidTimestamp::OutOfRange(s.chars().take(64).collect()));
    }
    // Through nanoseconds, because converting 9999-12-31T23:00-05:00 to UTC overflows.
    let nanos = parsed.unix_timestamp_nanos().clamp(
        Timestamp::MIN.0.unix_timestamp_nanos(),
        Timestamp::MAX.0.unix_timestamp_nanos(),
    );
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map(Timestamp::new)
        .map_err(|_| InvalidTimestamp::OutOfRange(s.chars().take(64).collect()))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_text())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A source of the current time, injected so schedule and retry logic is testable without sleeping.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now_utc()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Mutex::new(start))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now = now.plus(by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_is_the_stored_format_description() {
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let mut at = Timestamp::MIN;
        // Every field's extremes and much between, through year 9999.
        while at < Timestamp::MAX {
            assert_eq!(at.to_text(), at.0.format(format).unwrap(), "{at:?}");
            at = at.plus(Duration::from_millis(86_400_000 * 397 + 3_723_457));
        }
        assert_eq!(
            Timestamp::MAX.to_text(),
            Timestamp::MAX.0.format(format).unwrap()
        );
    }

    #[test]
    fn the_stored_form_reads_as_the_general_parser_reads_it() {
        let mut at = Timestamp::MIN;
        while at < Timestamp::MAX {
            let text = at.to_text();
            assert_eq!(stored_form(&text), Some(at), "{text}");
            assert_eq!(parse_rfc3339(&text).ok(), Some(at), "{text}");
            at = at.plus(Duration::from_millis(86_400_000 * 397 + 3_723_457));
        }
        assert_eq!(stored_form(&Timestamp::MAX.to_text()), Some(Timestamp::MAX));
        // Not the stored form, or not a valid instant: the general parser decides.
        for text in [
            "2026-02-30T00:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-12-01T24:00:00.000Z",
            "2016-12-31T23:59:60.000Z",
            "1969-12-31T23:59:59.999Z",
            "2026-12-01T00:00:00.000+",
            "2026-12-01 00:00:00.000Z",
            "2026-1a-01T00:00:00.000Z",
            "2026-12-01T00:00:00.00Z",
        ] {
            assert_eq!(stored_form(text), None, "{text}");
        }
        assert!("2016-12-31T23:59:60.000Z".parse::<Timestamp>().is_ok());
        assert!("1969-12-31T23:59:59.999Z".parse::<Timestamp>().is_err());
    }

    #[test]
    fn text_form_is_fixed_width_and_ordered() {
        let a: Timestamp = "2026-11-27T20:10:38Z".parse().unwrap();
        let b: Timestamp = "2026-11-27T20:10:38.5+00:00".parse().unwrap();
        let c: Timestamp = "2026-11-27T21:10:38.001+01:00".parse().unwrap();
        assert_eq!(a.to_text(), "2026-11-27T20:10:38.000Z");
        assert_eq!(b.to_text(), "2026-11-27T20:10:38.500Z");
        assert_eq!(c.to_text(), "2026-11-27T20:10:38.001Z");
        assert!(a.to_text() < c.to_text() && c.to_text() < b.to_text());
        assert_eq!(b.to_text().parse::<Timestamp>().unwrap(), b);
    }

    #[test]
    fn rejects_non_rfc3339() {
        for bad in [
            "yesterday",
            "2026-11-27",
            "2026-13-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let now: Timestamp = "2026-11-27T00:00:00Z".parse().unwrap();
        let forever = Duration::from_secs(20_000 * 366 * 24 * 3600);
        assert_eq!(now.plus(forever), Timestamp::MAX);
        assert_eq!(now.minus(forever), Timestamp::MIN);
        assert_eq!(Timestamp::MAX.to_text(), "9999-12-31T23:59:59.999Z");
        // An offset past either end of the range clamps instead of overflowing.
        let late: Timestamp = "9999-12-31T23:00:00-05:00".parse().unwrap();
        assert_eq!(late, Timestamp::MAX);
        let early: Timestamp = "1970-01-01T00:30:00+01:00".parse().unwrap();
        assert_eq!(early, Timestamp::MIN);
        assert!("1969-12-31T23:59:59Z".parse::<Timestamp>().is_err());
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let before = clock.now();
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now().to_text(), "2026-01-01T00:01:30.000Z");
        assert!(before < clock.now());
    }
}
