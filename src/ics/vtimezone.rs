//! Offsets from a calendar's own VTIMEZONE, for zone names no table knows
//! (rule 10: "Customized Time Zone", display names, home-made ids). Covers what
//! producers write: a single offset, yearly BYMONTH/BYDAY(/BYMONTHDAY) rules
//! from Exchange's `16010101T…` starts, and RDATE histories.

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta, Weekday};

use super::component::Component;
use super::time::{parse_utc_offset, parse_written, Written};

/// The observances of one VTIMEZONE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RuleZone {
    observances: Vec<Observance>,
}

/// One STANDARD or DAYLIGHT block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observance {
    /// Seconds east of UTC before each onset; onsets are written in this offset.
    offset_from: i32,
    /// Seconds east of UTC from each onset on.
    offset_to: i32,
    /// First onset, local wall time.
    start: NaiveDateTime,
    /// DTSTART and the RDATE onsets as UTC instants, sorted (zones with long
    /// histories list hundreds).
    onsets: Vec<NaiveDateTime>,
    rule: Option<YearlyRule>,
}

/// `FREQ=YEARLY` with BYMONTH / BYDAY / BYMONTHDAY / UNTIL; the only shape
/// VTIMEZONE rules take in practice.
#[derive(Debug, Clone, PartialEq, Eq)]
struct YearlyRule {
    month: Option<u32>,
    /// (n, weekday): n > 0 n-th, n < 0 n-th from the end, 0 any.
    by_day: Option<(i32, Weekday)>,
    month_days: Vec<u32>,
    /// Last onset, UTC.
    until: Option<NaiveDateTime>,
}

impl RuleZone {
    /// `None` when the VTIMEZONE has no observance with a usable offset (stubs).
    pub fn from_component(vtimezone: &Component) -> Option<Self> {
        let observances: Vec<Observance> = vtimezone
            .children
            .iter()
            .filter(|c| c.name == "STANDARD" || c.name == "DAYLIGHT")
            .filter_map(Observance::from_component)
            .collect();
        (!observances.is_empty()).then_some(Self { observances })
    }

    /// Seconds east of UTC in force at this UTC instant: the offset of the latest onset.
    pub fn offset_at(&self, utc: NaiveDateTime) -> i32 {
        let latest = self
            .observances
            .iter()
            .filter_map(|o| o.latest_onset(utc).map(|onset| (onset, o.offset_to)))
            .max_by_key(|(onset, _)| *onset);
        match latest {
            Some((_, offset)) => offset,
            None => self.offset_before_all(),
        }
    }

    /// Before the first onset, the zone is in its earliest observance's "from" offset.
    fn offset_before_all(&self) -> i32 {
        self.observances.iter().min_by_key(|o| o.start).map_or(0, |o| o.offset_from)
    }
}

impl Observance {
    fn from_component(block: &Component) -> Option<Self> {
        let offset_to = parse_utc_offset(&block.prop("TZOFFSETTO")?.value)?;
        let offset_from = block.prop("TZOFFSETFROM").and_then(|p| parse_utc_offset(&p.value)).unwrap_or(offset_to);
        // A block without DTSTART applies from 1970 on (NaiveDateTime's default).
        let start = block.prop("DTSTART").and_then(|p| local_time(&p.value)).unwrap_or_default();
        let rule = block.prop("RRULE").and_then(|p| YearlyRule::parse(&p.value));
        let mut observance = Self { offset_from, offset_to, start, onsets: Vec::new(), rule };
        let rdates =
            block.props_named("RDATE").flat_map(|p| p.value.split(',').filter_map(local_time).collect::<Vec<_>>());
        let mut onsets: Vec<NaiveDateTime> =
            std::iter::once(start).chain(rdates).filter_map(|local| observance.onset_utc(local)).collect();
        onsets.sort_unstable();
        observance.onsets = onsets;
        Some(observance)
    }

    /// The latest onset at or before `utc`, as a UTC instant.
    fn latest_onset(&self, utc: NaiveDateTime) -> Option<NaiveDateTime> {
        let first = self.onset_utc(self.start)?;
        let listed = self.onsets.partition_point(|onset| *onset <= utc);
        let explicit = listed.checked_sub(1).and_then(|i| self.onsets.get(i)).copied();
        self.rule_onsets(utc.year(), first).into_iter().filter(|onset| *onset <= utc).chain(explicit).max()
    }

    /// Rule onsets around `year` (one year either side covers offsets at year ends).
    fn rule_onsets(&self, year: i32, first: NaiveDateTime) -> Vec<NaiveDateTime> {
        let Some(rule) = &self.rule else {
            return Vec::new();
        };
        (year.saturating_sub(1)..=year.saturating_add(1))
            .filter_map(|y| rule.date_in(y, self.start.month(), self.start.day()))
            .filter_map(|date| self.onset_utc(date.and_time(self.start.time())))
            .filter(|onset| *onset >= first && rule.until.is_none_or(|until| *onset <= until))
            .collect()
    }

    fn onset_utc(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        local.checked_sub_signed(TimeDelta::try_seconds(i64::from(self.offset_from))?)
    }
}

/// VTIMEZONE times are local; a date alone means midnight.
fn local_time(raw: &str) -> Option<NaiveDateTime> {
    match parse_written(raw, false)? {
        Written::Date(date) => date.and_hms_opt(0, 0, 0),
        Written::Floating(local) | Written::Utc(local) => Some(local),
    }
}

impl YearlyRule {
    fn parse(value: &str) -> Option<Self> {
        let mut rule = Self { month: None, by_day: None, month_days: Vec::new(), until: None };
        let mut yearly = false;
        for part in value.split(';') {
            let Some((key, val)) = part.split_once('=') else {
                continue;
            };
            let val = val.trim();
            match key.trim().to_ascii_uppercase().as_str() {
                "FREQ" => yearly = val.eq_ignore_ascii_case("YEARLY"),
                "BYMONTH" => rule.month = val.split(',').next().and_then(|m| m.trim().parse().ok()),
                "BYDAY" => rule.by_day = val.split(',').next().and_then(parse_by_day),
                "BYMONTHDAY" => rule.month_days = val.split(',').filter_map(|d| d.trim().parse().ok()).collect(),
                "UNTIL" => rule.until = local_time(val),
                _ => {}
            }
        }
        yearly.then_some(rule)
    }

    fn date_in(&self, year: i32, default_month: u32, default_day: u32) -> Option<NaiveDate> {
        let month = self.month.unwrap_or(default_month);
        let in_month = |day: &u32| NaiveDate::from_ymd_opt(year, month, *day);
        match self.by_day {
            Some((_, weekday)) if !self.month_days.is_empty() => {
                self.month_days.iter().filter_map(in_month).find(|d| d.weekday() == weekday)
            }
            Some((n, weekday)) => nth_weekday(year, month, weekday, n),
            None => self.month_days.first().or(Some(&default_day)).and_then(in_month),
        }
    }
}

/// `-1SU`, `2SU`, `+1SU`, `SU`.
fn parse_by_day(text: &str) -> Option<(i32, Weekday)> {
    let text = text.trim();
    let split = text.len().checked_sub(2)?;
    let (count, day) = (text.get(..split)?, text.get(split..)?);
    let weekday = match day.to_ascii_uppercase().as_str() {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    };
    let n = match count.trim_start_matches('+') {
        "" => 0,
        digits => digits.parse().ok()?,
    };
    Some((n, weekday))
}

/// The n-th weekday of the month; n < 0 counts from the end, 0 means the
/// first, and a 5th that does not exist means the last (Windows' convention).
fn nth_weekday(year: i32, month: u32, weekday: Weekday, n: i32) -> Option<NaiveDate> {
    if n >= 0 {
        let n = u8::try_from(n.clamp(1, 5)).ok()?;
        return NaiveDate::from_weekday_of_month_opt(year, month, weekday, n)
            .or_else(|| (n == 5).then(|| nth_weekday(year, month, weekday, -1)).flatten());
    }
    let last = last_day_of_month(year, month)?;
    let back = (7 + last.weekday().num_days_from_monday() - weekday.num_days_from_monday()) % 7;
    let weeks_back = i64::from(n.unsigned_abs().saturating_sub(1)) * 7;
    let date = last.checked_sub_signed(TimeDelta::try_days(i64::from(back) + weeks_back)?)?;
    (date.month() == month).then_some(date)
}

fn last_day_of_month(year: i32, month: u32) -> Option<NaiveDate> {
    let next =
        if month >= 12 { NaiveDate::from_ymd_opt(year + 1, 1, 1) } else { NaiveDate::from_ymd_opt(year, month + 1, 1) };
    next?.pred_opt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_weekdays() {
        let cases = [
            ((2020, 3, Weekday::Sun, -1), Some((2020, 3, 29))),
            ((2020, 10, Weekday::Sun, -1), Some((2020, 10, 25))),
            ((2020, 3, Weekday::Sun, 2), Some((2020, 3, 8))),
            ((2020, 11, Weekday::Sun, 1), Some((2020, 11, 1))),
            ((2021, 5, Weekday::Mon, 5), Some((2021, 5, 31))),
            ((2021, 2, Weekday::Mon, 5), Some((2021, 2, 22))),
            ((2020, 3, Weekday::Thu, -1), Some((2020, 3, 26))),
            ((2021, 2, Weekday::Sat, -5), None),
            ((2020, 2, Weekday::Sat, -5), Some((2020, 2, 1))),
        ];
        for ((y, m, wd, n), want) in cases {
            let want = want.and_then(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d));
            assert_eq!(nth_weekday(y, m, wd, n), want, "{y}-{m} {wd} {n}");
        }
    }

    #[test]
    fn rules() {
        let rule = YearlyRule::parse("FREQ=YEARLY;BYDAY=SU;BYMONTHDAY=8,9,10,11,12,13,14;BYMONTH=3");
        assert_eq!(rule.and_then(|r| r.date_in(2020, 1, 1)), NaiveDate::from_ymd_opt(2020, 3, 8));
        assert_eq!(YearlyRule::parse("FREQ=DAILY;BYMONTH=3"), None);
        assert_eq!(parse_by_day("+1SU"), Some((1, Weekday::Sun)));
        assert_eq!(parse_by_day("XX"), None);
        assert_eq!(parse_by_day("S"), None);
    }
}
