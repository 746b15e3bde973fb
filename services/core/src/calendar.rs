//! The working calendar: which days are working days (Monday to Friday, minus public holidays,
//! plus make-up workdays, 调休), which hours of a working day count, and working-time
//! arithmetic for SLA deadlines and rule time windows.
//!
//! Local time is a fixed UTC offset. `Asia/Shanghai` is UTC+8 all year (China has not used
//! daylight saving time since 1991), so no time-zone database is needed; other fixed offsets are
//! written `+08:00`. Days outside the published schedule follow the plain Monday-Friday rule:
//! operators add each new year's schedule when the State Council publishes it. The last day a
//! schedule covers (`covered_until`, or the 31 December of its latest year) is the calendar's
//! horizon: a deadline counted past it is an estimate ([`WorkCalendar::covers`]), and a table
//! whose SLA spans reach past it draws a warning (`RoutingTable::calendar_shortfall`).

use std::collections::BTreeMap;

use serde::Deserialize;

/// The default schedule: the official PRC holidays and make-up workdays of 2024-2026.
pub const CN_2024_2026: &str = include_str!("../../../deploy/calendar/cn-2024-2026.yaml");

const MS_PER_MIN: i64 = 60_000;
const MS_PER_DAY: i64 = 86_400_000;

/// `calendar.yaml` as written.
#[derive(Debug, Clone, Deserialize)]
pub struct CalendarFile {
    /// `Asia/Shanghai` or a fixed offset such as `+08:00`.
    pub timezone: String,
    /// Working periods of a working day, e.g. `["08:30-12:00", "14:30-18:00"]` (the default).
    #[serde(default)]
    pub working_hours: Option<Vec<String>>,
    /// Days off (any weekday).
    #[serde(default)]
    pub holidays: Vec<DayEntry>,
    /// Weekend days that are working days (调休).
    #[serde(default)]
    pub workdays: Vec<DayEntry>,
    /// The last day the schedule covers (`YYYY-MM-DD`); absent = the 31 December of the latest
    /// year that has a holiday or a make-up workday. A calendar without any holidays or
    /// workdays and without this field has no horizon (plain weeks are its whole schedule).
    #[serde(default)]
    pub covered_until: Option<String>,
}

/// A dated entry.
#[derive(Debug, Clone, Deserialize)]
pub struct DayEntry {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// What it is, e.g. `National Day`.
    #[serde(default)]
    pub name: String,
}

/// A loaded calendar.
#[derive(Debug, Clone)]
pub struct WorkCalendar {
    offset_ms: i64,
    /// Working periods in ms since local midnight, sorted and disjoint.
    periods: Vec<(i64, i64)>,
    holidays: BTreeMap<i64, String>,
    workdays: BTreeMap<i64, String>,
    /// Every day from the first holiday or workday listed to the last, by kind: the deadline
    /// loops look up each day they step over (weeks of days per incident routed), and an
    /// indexed read is cheaper than two map lookups. `None` when the listed days span more
    /// than [`LISTED_MAX_DAYS`]; the maps answer then.
    listed: Option<Listed>,
    /// The last local day the published schedule covers; `None` = no horizon.
    covered_until: Option<i64>,
}

/// Longest span of listed days kept as a table (about 55 years; one byte a day).
const LISTED_MAX_DAYS: i64 = 20_000;

/// The listed days as a table from day `from`.
#[derive(Debug, Clone)]
struct Listed {
    from: i64,
    kinds: Vec<DayKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayKind {
    Plain,
    Holiday,
    Workday,
}

impl Listed {
    fn new(holidays: &BTreeMap<i64, String>, workdays: &BTreeMap<i64, String>) -> Option<Self> {
        let days = || holidays.keys().chain(workdays.keys()).copied();
        let (Some(from), Some(to)) = (days().min(), days().max()) else {
            return Some(Self {
                from: 0,
                kinds: Vec::new(),
            });
        };
        let len = usize::try_from(to - from + 1)
            .ok()
            .filter(|_| to - from < LISTED_MAX_DAYS)?;
        let mut kinds = vec![DayKind::Plain; len];
        for (map, kind) in [(holidays, DayKind::Holiday), (workdays, DayKind::Workday)] {
            for &d in map.keys() {
                if let Some(k) = usize::try_from(d - from)
                    .ok()
                    .and_then(|i| kinds.get_mut(i))
                {
                    *k = kind;
                }
            }
        }
        Some(Self { from, kinds })
    }

    fn kind(&self, day: i64) -> DayKind {
        day.checked_sub(self.from)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.kinds.get(i))
            .copied()
            .unwrap_or(DayKind::Plain)
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// A day number as `YYYY-MM-DD`.
pub fn format_date(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses `YYYY-MM-DD` into a day number.
pub fn parse_date(text: &str) -> Option<i64> {
    let mut it = text.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let z = days_from_civil(y, m, d);
    (civil_from_days(z) == (y, m, d)).then_some(z)
}

fn parse_hhmm(text: &str) -> Option<i64> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 1440)
        .then_some((h * 60 + m) * MS_PER_MIN)
}

fn parse_offset(tz: &str) -> Option<i64> {
    match tz {
        "Asia/Shanghai" | "Asia/Chongqing" | "Asia/Harbin" | "Asia/Urumqi" | "PRC" => {
            Some(8 * 3_600_000)
        }
        "UTC" | "Etc/UTC" => Some(0),
        _ => {
            let (sign, rest) = match tz.as_bytes().first()? {
                b'+' => (1, &tz[1..]),
                b'-' => (-1, &tz[1..]),
                _ => return None,
            };
            Some(sign * parse_hhmm(rest)?)
        }
    }
}

/// Instants handled by the calendar lie within ±100,000 years of 1970 (ms): far beyond any
/// deadline, and far from `i64` overflow in the day arithmetic.
const MAX_INSTANT_MS: i64 = 100_000 * 366 * MS_PER_DAY;
/// Longest interval [`WorkCalendar::working_between`] walks day by day: twenty years.
const MAX_BETWEEN_MS: i64 = 20 * 366 * MS_PER_DAY;

impl WorkCalendar {
    /// Loads a calendar; every problem is listed.
    pub fn from_yaml(text: &str) -> Result<Self, Vec<String>> {
        let file: CalendarFile = yaml_serde::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut errors = Vec::new();
        let offset_ms = parse_offset(&file.timezone).unwrap_or_else(|| {
            errors.push(format!(
                "timezone {:?}: use Asia/Shanghai or a fixed offset like +08:00",
                file.timezone
            ));
            0
        });
        let hours = file
            .working_hours
            .unwrap_or_else(|| vec!["08:30-12:00".into(), "14:30-18:00".into()]);
        let mut periods = Vec::new();
        for p in &hours {
            match p
                .split_once('-')
                .and_then(|(a, b)| Some((parse_hhmm(a)?, parse_hhmm(b)?)))
            {
                Some((a, b)) if a < b => periods.push((a, b)),
                _ => errors.push(format!(
                    "working_hours {p:?}: write HH:MM-HH:MM with start before end"
                )),
            }
        }
        periods.sort_unstable();
        if periods.windows(2).any(|w| w[0].1 > w[1].0) {
            errors.push("working_hours overlap".into());
        }
        if periods.is_empty() {
            errors.push("working_hours is empty".into());
        }
        let mut days = |list: &[DayEntry], what: &str| {
            let mut out = BTreeMap::new();
            for e in list {
                match parse_date(&e.date) {
                    Some(d) => {
                        out.insert(d, e.name.clone());
                    }
                    None => errors.push(format!("{what} {:?} is not a YYYY-MM-DD date", e.date)),
                }
            }
            out
        };
        let holidays = days(&file.holidays, "holiday");
        let workdays = days(&file.workdays, "workday");
        for d in holidays.keys().filter(|d| workdays.contains_key(d)) {
            let (y, m, dd) = civil_from_days(*d);
            errors.push(format!(
                "{y:04}-{m:02}-{dd:02} is both a holiday and a workday"
            ));
        }
        let latest = holidays.keys().chain(workdays.keys()).max().copied();
        let covered_until = match file.covered_until.as_deref() {
            Some(text) => match parse_date(text) {
                Some(d) if latest.is_none_or(|l| l <= d) => Some(d),
                Some(_) => {
                    errors.push(format!(
                        "covered_until {text:?} is before the latest holiday or workday listed"
                    ));
                    None
                }
                None => {
                    errors.push(format!("covered_until {text:?} is not a YYYY-MM-DD date"));
                    None
                }
            },
            None => latest.map(|d| days_from_civil(civil_from_days(d).0, 12, 31)),
        };
        if errors.is_empty() {
            Ok(Self {
                offset_ms,
                periods,
                listed: Listed::new(&holidays, &workdays),
                holidays,
                workdays,
                covered_until,
            })
        } else {
            Err(errors)
        }
    }

    /// The built-in default: Asia/Shanghai, 08:30-12:00 and 14:30-18:00, 2024-2026 schedule.
    pub fn cn_default() -> Self {
        Self::from_yaml(CN_2024_2026).expect("the built-in calendar is valid")
    }

    /// The last local day the published schedule covers (day number); `None` when the calendar
    /// has no horizon.
    pub fn covered_until(&self) -> Option<i64> {
        self.covered_until
    }

    /// The instant the schedule stops covering (local midnight after its last day); `None` when
    /// the calendar has no horizon.
    pub fn horizon_ms(&self) -> Option<i64> {
        self.covered_until.map(|d| self.instant(d + 1, 0))
    }

    /// Whether working time up to `ms` is counted on the published schedule: `false` for an
    /// instant past the horizon, where only plain Monday-Friday weeks are counted (an estimate
    /// until the next year's schedule is added).
    pub fn covers(&self, ms: i64) -> bool {
        self.horizon_ms().is_none_or(|h| ms <= h)
    }

    /// Local day number and ms since local midnight of an instant.
    pub fn local(&self, ms: i64) -> (i64, i64) {
        let local = ms + self.offset_ms;
        (local.div_euclid(MS_PER_DAY), local.rem_euclid(MS_PER_DAY))
    }

    fn instant(&self, day: i64, ms_of_day: i64) -> i64 {
        day * MS_PER_DAY + ms_of_day - self.offset_ms
    }

    /// Whether a local day is a working day.
    pub fn is_working_day(&self, day: i64) -> bool {
        match self.day_kind(day) {
            DayKind::Holiday => false,
            DayKind::Workday => true,
            // 1970-01-01 was a Thursday: weekday 0 = Monday.
            DayKind::Plain => (day + 3).rem_euclid(7) < 5,
        }
    }

    /// Whether a local day is an official holiday.
    pub fn is_holiday(&self, day: i64) -> bool {
        self.day_kind(day) == DayKind::Holiday
    }

    /// Whether a local day is listed, and as what.
    fn day_kind(&self, day: i64) -> DayKind {
        match &self.listed {
            Some(listed) => listed.kind(day),
            None if self.holidays.contains_key(&day) => DayKind::Holiday,
            None if self.workdays.contains_key(&day) => DayKind::Workday,
            None => DayKind::Plain,
        }
    }

    /// Whether an instant falls in working hours of a working day.
    pub fn is_working_time(&self, ms: i64) -> bool {
        let (day, t) = self.local(ms);
        self.is_working_day(day) && self.periods.iter().any(|&(a, b)| a <= t && t < b)
    }

    /// Working time in one working day, in ms.
    pub fn working_ms_per_day(&self) -> i64 {
        self.periods.iter().map(|(a, b)| b - a).sum()
    }

    /// The instant at which `duration_ms` of working time has elapsed after `start_ms`. A
    /// calendar without working time for ten years (or a span beyond it) gives ten years later:
    /// the answer stays a real instant that later arithmetic cannot overflow.
    pub fn add_working(&self, start_ms: i64, duration_ms: i64) -> i64 {
        let start_ms = start_ms.clamp(-MAX_INSTANT_MS, MAX_INSTANT_MS);
        let (mut day, mut t) = self.local(start_ms);
        let mut remaining = duration_ms.max(0);
        // Ten years without a working minute means a broken calendar; stop rather than spin.
        for _ in 0..3660 {
            if self.is_working_day(day) {
                for &(a, b) in &self.periods {
                    if t >= b {
                        continue;
                    }
                    let s = t.max(a);
                    if remaining <= b - s {
                        return self.instant(day, s + remaining);
                    }
                    remaining -= b - s;
                }
            }
            day += 1;
            t = 0;
        }
        self.instant(day, 0)
    }

    /// Working time between two instants, in ms (0 when `end <= start`).
    pub fn working_between(&self, start_ms: i64, end_ms: i64) -> i64 {
        // Instants beyond any real deadline are clamped, so that the day loop stays bounded.
        let start_ms = start_ms.clamp(-MAX_INSTANT_MS, MAX_INSTANT_MS);
        let end_ms = end_ms.clamp(start_ms, start_ms.saturating_add(MAX_BETWEEN_MS));
        if end_ms <= start_ms {
            return 0;
        }
        let (d0, t0) = self.local(start_ms);
        let (d1, t1) = self.local(end_ms);
        let mut total = 0;
        for day in d0..=d1 {
            if !self.is_working_day(day) {
                continue;
            }
            let lo = if day == d0 { t0 } else { 0 };
            let hi = if day == d1 { t1 } else { MS_PER_DAY };
            total += self
                .periods
                .iter()
                .map(|&(a, b)| (b.min(hi) - a.max(lo)).max(0))
                .sum::<i64>();
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(cal: &WorkCalendar, date: &str, hhmm: &str) -> i64 {
        cal.instant(parse_date(date).unwrap(), parse_hhmm(hhmm).unwrap())
    }

    fn show(cal: &WorkCalendar, ms: i64) -> String {
        let (day, t) = cal.local(ms);
        let (y, m, d) = civil_from_days(day);
        format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}",
            t / 3_600_000,
            (t / 60_000) % 60
        )
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(parse_date("2025-02-29"), None);
        for z in -800_000..800_000 {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn the_day_table_answers_as_the_listed_days_do() {
        let table = WorkCalendar::cn_default();
        assert!(table.listed.is_some());
        let maps = WorkCalendar {
            listed: None,
            ..table.clone()
        };
        let from = days_from_civil(2023, 1, 1);
        for day in from..from + 5 * 366 {
            assert_eq!(
                (table.is_working_day(day), table.is_holiday(day)),
                (maps.is_working_day(day), maps.is_holiday(day)),
                "day {day}"
            );
        }
        // Listed days too far apart for a table: the maps answer.
        let far = WorkCalendar::from_yaml(
            "timezone: Asia/Shanghai\nworking_hours: ['08:30-12:00']\nholidays: [{date: 2025-05-01}, {date: 2099-01-01}]\n",
        )
        .unwrap();
        assert!(far.listed.is_none());
        let day = |s| parse_date(s).unwrap();
        assert!(
            !far.is_working_day(day("2025-05-01")),
            "listed holiday, a Thursday"
        );
        assert!(far.is_working_day(day("2025-05-02")), "plain Friday");
        assert!(!far.is_working_day(day("2025-05-03")), "plain Saturday");
    }

    #[test]
    fn holidays_and_make_up_workdays() {
        let cal = WorkCalendar::cn_default();
        let day = |s| parse_date(s).unwrap();
        assert!(
            cal.is_working_day(day("2025-09-30")),
            "Tuesday before National Day"
        );
        assert!(!cal.is_working_day(day("2025-10-01")));
        assert!(!cal.is_working_day(day("2025-10-08")));
        assert!(
            cal.is_working_day(day("2025-09-28")),
            "Sunday make-up workday"
        );
        assert!(
            cal.is_working_day(day("2025-10-11")),
            "Saturday make-up workday"
        );
        assert!(!cal.is_working_day(day("2025-10-12")), "ordinary Sunday");
        assert!(
            !cal.is_working_day(day("2024-02-12")),
            "Spring Festival Monday"
        );
        assert!(
            cal.is_working_day(day("2024-02-04")),
            "Spring Festival make-up Sunday"
        );
        assert!(
            cal.is_working_day(day("2027-03-03")),
            "beyond the schedule: plain weekdays"
        );
    }

    #[test]
    fn deadlines_cross_holidays_and_make_up_days() {
        let cal = WorkCalendar::cn_default();
        let wd = cal.working_ms_per_day();
        assert_eq!(wd, 7 * 3_600_000);
        // Dispatched 17:30 on the last working day before National Day 2025 with 1.5 working
        // days: 30 min that evening, then 7 h on Thursday 9 October, 3 h on Friday 10 October.
        let due = cal.add_working(at(&cal, "2025-09-30", "17:30"), wd * 3 / 2);
        assert_eq!(show(&cal, due), "2025-10-10 11:30");
        // Three working days from 17:30 on 9 October run through the make-up Saturday.
        let due = cal.add_working(at(&cal, "2025-10-09", "17:30"), wd * 3);
        assert_eq!(show(&cal, due), "2025-10-13 17:30");
        // Started outside working hours: the clock starts at the next working minute.
        let due = cal.add_working(at(&cal, "2025-10-12", "03:00"), 60 * 60_000);
        assert_eq!(show(&cal, due), "2025-10-13 09:30");
        // Lunch break does not count; a period's end is a valid deadline.
        assert_eq!(
            show(
                &cal,
                cal.add_working(at(&cal, "2025-10-13", "11:00"), 90 * 60_000)
            ),
            "2025-10-13 15:00"
        );
        assert_eq!(
            show(
                &cal,
                cal.add_working(at(&cal, "2025-10-13", "17:00"), 60 * 60_000)
            ),
            "2025-10-13 18:00"
        );
        // Spring Festival 2024: Friday 9 Feb 17:00 + 2 h: one hour that evening, then the
        // holiday; work resumes on Sunday 18 Feb, a make-up workday.
        assert_eq!(
            show(
                &cal,
                cal.add_working(at(&cal, "2024-02-09", "17:00"), 2 * 3_600_000)
            ),
            "2024-02-18 09:30"
        );
    }

    #[test]
    fn working_between_inverts_add_working() {
        let cal = WorkCalendar::cn_default();
        let start = at(&cal, "2025-09-26", "10:17");
        for minutes in [0i64, 1, 59, 200, 420, 421, 3000, 20_000] {
            let end = cal.add_working(start, minutes * 60_000);
            assert_eq!(
                cal.working_between(start, end),
                minutes * 60_000,
                "{minutes} min"
            );
        }
    }

    #[test]
    fn bad_calendars_list_every_problem() {
        let err = WorkCalendar::from_yaml(
            "timezone: Mars/Olympus\nworking_hours: ['12:00-08:00']\nholidays: [{date: 2025-13-01}, {date: 2025-05-01}]\nworkdays: [{date: 2025-05-01}]\n",
        )
        .unwrap_err();
        assert_eq!(err.len(), 5, "{err:?}");
    }
}
