//! Working-time arithmetic on the shipped 2024-2026 schedule: table tests across holidays and
//! make-up workdays (调休), and properties that must hold for any start and any span.

#![allow(clippy::unwrap_used)]

use gridroute_core::calendar::{WorkCalendar, civil_from_days, days_from_civil, parse_date};
use proptest::prelude::*;

const H: i64 = 3_600_000;
const UTC8: i64 = 8 * H;

/// Beijing time `YYYY-MM-DD HH:MM` → ms.
fn at(date: &str, hhmm: &str) -> i64 {
    let day = parse_date(date).unwrap();
    let (h, m) = hhmm.split_once(':').unwrap();
    day * 86_400_000 + h.parse::<i64>().unwrap() * H + m.parse::<i64>().unwrap() * 60_000 - UTC8
}

fn show(ms: i64) -> String {
    let local = ms + UTC8;
    let (y, m, d) = civil_from_days(local.div_euclid(86_400_000));
    let t = local.rem_euclid(86_400_000);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", t / H, (t / 60_000) % 60)
}

#[test]
fn deadlines_across_every_kind_of_holiday() {
    let cal = WorkCalendar::cn_default();
    let wd = cal.working_ms_per_day();
    let cases = [
        // The example: 17:30 on the last working day before National Day 2025, 1.5 wd.
        ("2025-09-30", "17:30", wd * 3 / 2, "2025-10-10 11:30"),
        // National Day 2024: 30 min that evening, 7 h on 8 October, 3 h on 9 October.
        ("2024-09-30", "17:30", wd * 3 / 2, "2024-10-09 11:30"),
        // Spring Festival 2026: Saturday 14 February is a make-up workday before the holiday.
        ("2026-02-13", "17:00", 2 * wd, "2026-02-24 17:00"),
        // Spring Festival 2025: Sunday 26 January is a make-up workday.
        ("2025-01-24", "16:00", wd, "2025-01-26 16:00"),
        // Saturday 10 October 2026 is a make-up workday after National Day.
        ("2026-10-09", "17:00", 4 * H, "2026-10-10 11:30"),
        // New Year 2026: Sunday 4 January is a make-up workday.
        ("2025-12-31", "17:30", H, "2026-01-04 09:00"),
        // Labour Day 2025: lunch does not count, five days off.
        ("2025-04-30", "11:00", wd * 3 / 2, "2025-05-06 17:00"),
    ];
    for (date, time, span, want) in cases {
        let due = cal.add_working(at(date, time), span);
        assert_eq!(show(due), want, "{date} {time} + {span} ms");
        assert_eq!(cal.working_between(at(date, time), due), span);
    }
}

fn instant() -> impl Strategy<Value = i64> {
    let lo = days_from_civil(2024, 1, 1) * 86_400_000;
    let hi = days_from_civil(2026, 12, 31) * 86_400_000;
    (lo..hi).prop_map(|ms| ms - ms % 60_000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    /// The working time between a start and its deadline is exactly the span asked for.
    #[test]
    fn working_between_inverts_add_working(start in instant(), minutes in 0i64..20 * 7 * 60) {
        let cal = WorkCalendar::cn_default();
        let due = cal.add_working(start, minutes * 60_000);
        prop_assert!(due >= start);
        prop_assert_eq!(cal.working_between(start, due), minutes * 60_000);
    }

    /// A deadline falls inside working time (or at the end of a working period), never on a
    /// holiday or a weekend that is not a make-up workday.
    #[test]
    fn deadlines_fall_in_working_time(start in instant(), minutes in 1i64..20 * 7 * 60) {
        let cal = WorkCalendar::cn_default();
        let due = cal.add_working(start, minutes * 60_000);
        prop_assert!(cal.is_working_time(due - 1), "{} is not working time", show(due - 1));
    }

    /// Spans add up: two consecutive spans end where their sum ends.
    #[test]
    fn spans_add_up(start in instant(), a in 1i64..5 * 7 * 60, b in 1i64..5 * 7 * 60) {
        let cal = WorkCalendar::cn_default();
        let two = cal.add_working(cal.add_working(start, a * 60_000), b * 60_000);
        prop_assert_eq!(two, cal.add_working(start, (a + b) * 60_000));
    }

    /// Longer spans never end earlier.
    #[test]
    fn deadlines_are_monotonic(start in instant(), a in 0i64..10 * 7 * 60, extra in 0i64..600) {
        let cal = WorkCalendar::cn_default();
        prop_assert!(cal.add_working(start, a * 60_000) <= cal.add_working(start, (a + extra) * 60_000));
    }
}

#[test]
fn the_schedule_has_a_horizon_declared_or_inferred() {
    let cal = WorkCalendar::cn_default();
    assert_eq!(cal.covered_until(), parse_date("2026-12-31"));
    assert!(cal.covers(at("2026-12-31", "23:59")));
    assert!(!cal.covers(at("2027-01-01", "00:01")));
    assert_eq!(cal.horizon_ms(), Some(at("2027-01-01", "00:00")));

    // Without `covered_until`: the 31 December of the latest year listed.
    let inferred = WorkCalendar::from_yaml(
        "timezone: Asia/Shanghai\nholidays:\n  - {date: 2030-05-01, name: Labour Day}\n",
    )
    .unwrap();
    assert_eq!(inferred.covered_until(), parse_date("2030-12-31"));
    // Nothing listed and nothing declared: plain weeks are the whole schedule, no horizon.
    let plain = WorkCalendar::from_yaml("timezone: +08:00\n").unwrap();
    assert_eq!(plain.covered_until(), None);
    assert!(plain.covers(i64::MAX / 2));
    // A declared end before a listed day, or not a date, is refused with the reason.
    let errors = WorkCalendar::from_yaml(
        "timezone: Asia/Shanghai\ncovered_until: 2030-01-31\nholidays:\n  - {date: 2030-05-01}\n",
    )
    .unwrap_err();
    assert!(
        errors[0].contains("before the latest holiday"),
        "{errors:?}"
    );
    let errors =
        WorkCalendar::from_yaml("timezone: Asia/Shanghai\ncovered_until: soon\n").unwrap_err();
    assert!(errors[0].contains("not a YYYY-MM-DD date"), "{errors:?}");
}
