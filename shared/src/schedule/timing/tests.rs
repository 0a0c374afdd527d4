//! Ticks computed from fixed instants: no clock, no sleeping.

use super::*;

fn at(text: &str) -> Timestamp {
    text.parse().expect("a timestamp")
}

fn texts(ticks: &[Timestamp]) -> Vec<String> {
    ticks.iter().map(|t| t.to_text()).collect()
}

#[test]
fn every_five_minutes_across_an_hour() {
    let timing = Timing::parse("*/5 * * * *", "UTC").expect("valid");
    let ticks = timing.upcoming(at("2026-06-01T08:59:59.999Z"), 13);
    let expected: Vec<String> = (0..12)
        .map(|i| format!("2026-06-01T09:{:02}:00.000Z", i * 5))
        .chain(["2026-06-01T10:00:00.000Z".to_owned()])
        .collect();
    assert_eq!(texts(&ticks), expected);
    // A tick is strictly after the instant asked about.
    assert_eq!(
        timing.next_after(at("2026-06-01T09:05:00.000Z")),
        Some(at("2026-06-01T09:10:00.000Z"))
    );
}

#[test]
fn weekday_mornings_in_berlin_follow_both_dst_changes_of_a_year() {
    let timing = Timing::parse("0 9 * * MON-FRI", "Europe/Berlin").expect("valid");
    let ticks = timing.upcoming(at("2026-01-01T00:00:00.000Z"), 400);
    let in_2026: Vec<&Timestamp> = ticks
        .iter()
        .filter(|t| t.to_text().starts_with("2026"))
        .collect();
    // Every weekday of 2026 once, each at 09:00 on Berlin's clock.
    assert_eq!(in_2026.len(), 261);
    let berlin = TimeZone::get("Europe/Berlin").expect("zone");
    for tick in &in_2026 {
        let local = berlin.to_datetime(to_jiff(**tick).expect("in range"));
        assert_eq!((local.hour(), local.minute(), local.second()), (9, 0, 0));
        assert!(!matches!(
            local.weekday(),
            jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
        ));
    }
    // Spring forward on Sunday 29 March: 08:00Z (CET) on Friday, 07:00Z (CEST) on Monday.
    let around_spring = timing.upcoming(at("2026-03-26T12:00:00.000Z"), 2);
    assert_eq!(
        texts(&around_spring),
        ["2026-03-27T08:00:00.000Z", "2026-03-30T07:00:00.000Z"]
    );
    // Fall back on Sunday 25 October: 07:00Z on Friday, 08:00Z on Monday.
    let around_fall = timing.upcoming(at("2026-10-22T12:00:00.000Z"), 2);
    assert_eq!(
        texts(&around_fall),
        ["2026-10-23T07:00:00.000Z", "2026-10-26T08:00:00.000Z"]
    );
}

#[test]
fn new_york_half_past_two_is_skipped_on_spring_forward_and_runs_once_on_fall_back() {
    let timing = Timing::parse("30 2 * * *", "America/New_York").expect("valid");
    // 8 March 2026 has no 02:30: from 7 March (EST) straight to 9 March (EDT).
    let spring = timing.upcoming(at("2026-03-07T00:00:00.000Z"), 2);
    assert_eq!(
        texts(&spring),
        ["2026-03-07T07:30:00.000Z", "2026-03-09T06:30:00.000Z"]
    );
    // 1 November 2026 (fall back): 02:30 EST once.
    let fall = timing.upcoming(at("2026-10-31T00:00:00.000Z"), 3);
    assert_eq!(
        texts(&fall),
        [
            "2026-10-31T06:30:00.000Z",
            "2026-11-01T07:30:00.000Z",
            "2026-11-02T07:30:00.000Z"
        ]
    );
}

#[test]
fn a_time_in_the_repeated_hour_runs_once_at_its_first_occurrence() {
    let timing = Timing::parse("30 1 * * *", "America/New_York").expect("valid");
    let fall = timing.upcoming(at("2026-10-31T12:00:00.000Z"), 2);
    // 01:30 EDT (05:30Z); the second 01:30 (EST, 06:30Z) does not fire.
    assert_eq!(
        texts(&fall),
        ["2026-11-01T05:30:00.000Z", "2026-11-02T06:30:00.000Z"]
    );
    // Every five minutes: the repeated hour fires once, then the clock goes on at 02:00 EST.
    let often = Timing::parse("*/5 * * * *", "America/New_York").expect("valid");
    assert_eq!(
        texts(&often.upcoming(at("2026-11-01T05:50:00.000Z"), 2)),
        ["2026-11-01T05:55:00.000Z", "2026-11-01T07:00:00.000Z"]
    );
    // During the second pass, the latest tick is the first pass's last one.
    assert_eq!(
        often.latest_at_or_before(at("2026-11-01T06:30:00.000Z")),
        Some(at("2026-11-01T05:55:00.000Z"))
    );
    assert_eq!(
        often.next_after(at("2026-11-01T06:30:00.000Z")),
        Some(at("2026-11-01T07:00:00.000Z"))
    );
}

#[test]
fn six_fields_put_seconds_first() {
    let timing = Timing::parse("*/15 * * * * *", "UTC").expect("valid");
    assert_eq!(
        texts(&timing.upcoming(at("2026-06-01T09:00:00.000Z"), 3)),
        [
            "2026-06-01T09:00:15.000Z",
            "2026-06-01T09:00:30.000Z",
            "2026-06-01T09:00:45.000Z"
        ]
    );
    let once = Timing::parse("30 0 9 * * *", "UTC").expect("valid");
    assert_eq!(
        once.next_after(at("2026-06-01T00:00:00.000Z")),
        Some(at("2026-06-01T09:00:30.000Z"))
    );
}

#[test]
fn ticks_back_from_an_instant_down_to_a_floor() {
    let timing = Timing::parse("0 * * * *", "UTC").expect("valid");
    let ticks = timing.ticks_back(
        at("2026-06-01T09:00:00.000Z"),
        at("2026-06-01T12:05:00.000Z"),
        10,
    );
    assert_eq!(
        texts(&ticks),
        [
            "2026-06-01T12:00:00.000Z",
            "2026-06-01T11:00:00.000Z",
            "2026-06-01T10:00:00.000Z",
            "2026-06-01T09:00:00.000Z"
        ]
    );
    assert_eq!(
        timing
            .ticks_back(
                at("2026-06-01T00:00:00.000Z"),
                at("2026-06-01T12:05:00.000Z"),
                2
            )
            .len(),
        2
    );
}

#[test]
fn bad_expressions_and_zones_say_what_is_wrong() {
    let err = Timing::parse("* * * *", "UTC").unwrap_err();
    assert!(err.to_string().contains("4 fields"), "{err}");
    let err = Timing::parse("61 * * * *", "UTC").unwrap_err();
    assert!(matches!(err, TimingError::Cron(_)), "{err}");
    assert!(err.to_string().starts_with("minute field \"61\""), "{err}");
    let err = Timing::parse("0 0 9 * * FUNDAY", "UTC").unwrap_err();
    assert!(err.to_string().starts_with("day-of-week field"), "{err}");
    let err = Timing::parse("0 9 * * *", "Mars/Olympus_Mons").unwrap_err();
    assert_eq!(err, TimingError::Zone("Mars/Olympus_Mons".to_owned()));
    let err = Timing::parse("0 0 30 2 *", "UTC").unwrap_err();
    assert!(matches!(err, TimingError::Never(_)), "{err}");
}

#[test]
fn an_expression_with_no_day_within_five_years_is_refused() {
    // April 31 does not exist: refused from the calendar, without the parser's search to the
    // year 5000.
    let err = Timing::parse("0 0 0 31 4 *", "UTC").unwrap_err();
    assert!(matches!(err, TimingError::Never(_)), "{err}");
    assert!(err.to_string().contains("within 5 years"), "{err}");
    // The fifth Friday of February: only a leap February that starts on a Friday (2036,
    // then 2064): it fires, but not within five years of any day before 2031.
    if Timestamp::now_utc() < "2031-01-01T00:00:00Z".parse().expect("instant") {
        let err = Timing::parse("0 0 * 2 5#5", "UTC").unwrap_err();
        assert!(matches!(err, TimingError::Never(_)), "{err}");
    }
    // Every February 29 fires within five years of any day.
    assert!(Timing::parse("0 0 29 2 *", "Europe/Berlin").is_ok());
}
