//! Offsets from a calendar's own VTIMEZONE, for zone names no table knows
//! (rule 10: "Customized Time Zone", display names, home-made ids). Covers what
//! producers write: a single offset, yearly BYMONTH/BYDAY(/BYMONTHDAY) rules
//! from Exchange's `16010101T…` starts, histories of several dated blocks (one
//! per rule change, their rules ended by UNTIL or COUNT), and RDATE lists.

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

/// `FREQ=YEARLY` with BYMONTH / BYDAY / BYMONTHDAY / INTERVAL / UNTIL / COUNT;
/// the only shape VTIMEZONE rules take in practice.
#[derive(Debug, Clone, PartialEq, Eq)]
struct YearlyRule {
    month: Option<u32>,
    /// (n, weekday): n > 0 n-th, n < 0 n-th from the end, 0 any.
    by_day: Option<(i32, Weekday)>,
    month_days: Vec<u32>,
    /// Every how many years the rule applies, counted from the block's DTSTART.
    interval: u32,
    /// Last onset allowed.
    until: Option<Until>,
    /// How many onsets the rule gives, the DTSTART one included.
    count: Option<u32>,
}

/// An RRULE's UNTIL: RFC 5545 wants UTC in a VTIMEZONE, but some producers
/// write the local time (or a date) of the last onset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    Utc(NaiveDateTime),
    Local(NaiveDateTime),
}

impl Until {
    fn year(self) -> i32 {
        match self {
            Self::Utc(at) | Self::Local(at) => at.year(),
        }
    }

    /// Whether an onset (at `local` wall time, `utc` instant) is not after UNTIL.
    fn allows(self, local: NaiveDateTime, utc: NaiveDateTime) -> bool {
        match self {
            Self::Utc(until) => utc <= until,
            Self::Local(until) => local <= until,
        }
    }
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
        let listed = self.onsets.partition_point(|onset| *onset <= utc);
        let explicit = listed.checked_sub(1).and_then(|i| self.onsets.get(i)).copied();
        let ruled = self.rule.as_ref().and_then(|rule| self.latest_rule_onset(rule, utc));
        ruled.into_iter().chain(explicit).max()
    }

    /// The rule's latest onset at or before `utc`. The rule is evaluated around
    /// the instant's year, or around its own last year when UNTIL or COUNT ended
    /// it earlier (one year either side covers offsets at year ends).
    fn latest_rule_onset(&self, rule: &YearlyRule, utc: NaiveDateTime) -> Option<NaiveDateTime> {
        let first = self.onset_utc(self.start)?;
        let first_year = self.start.year();
        let last_year = rule.last_year(first_year);
        let year = [Some(utc.year()), rule.until.map(Until::year), last_year].into_iter().flatten().min()?;
        (year.saturating_sub(1)..=year.saturating_add(1))
            .filter(|y| *y >= first_year && last_year.is_none_or(|last| *y <= last))
            .filter(|y| (y - first_year).unsigned_abs().is_multiple_of(rule.interval))
            .filter_map(|y| rule.date_in(y, self.start.month(), self.start.day()))
            .map(|date| date.and_time(self.start.time()))
            .filter_map(|local| Some((local, self.onset_utc(local)?)))
            .filter(|(local, onset)| rule.until.is_none_or(|until| until.allows(*local, *onset)))
            .map(|(_, onset)| onset)
            .filter(|onset| *onset >= first && *onset <= utc)
            .max()
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

/// A date UNTIL covers the whole day.
fn parse_until(raw: &str) -> Option<Until> {
    match parse_written(raw, false)? {
        Written::Utc(at) => Some(Until::Utc(at)),
        Written::Floating(at) => Some(Until::Local(at)),
        Written::Date(date) => date.and_hms_opt(23, 59, 59).map(Until::Local),
    }
}

impl YearlyRule {
    fn parse(value: &str) -> Option<Self> {
        let mut rule =
            Self { month: None, by_day: None, month_days: Vec::new(), interval: 1, until: None, count: None };
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
                "INTERVAL" => rule.interval = val.parse().ok().filter(|n| *n > 0).unwrap_or(1),
                "UNTIL" => rule.until = parse_until(val),
                "COUNT" => rule.count = val.parse().ok(),
                _ => {}
            }
        }
        yearly.then_some(rule)
    }

    /// The last year with an onset when COUNT limits the rule, taking the
    /// block's DTSTART (in `first_year`) as the first onset.
    /// `COUNT=0` gives no onset at all: its last year is before the first.
    fn last_year(&self, first_year: i32) -> Option<i32> {
        let Some(more) = self.count?.checked_sub(1) else {
            return Some(first_year.saturating_sub(1));
        };
        let last = i64::from(first_year) + i64::from(more) * i64::from(self.interval);
        Some(i32::try_from(last).unwrap_or(i32::MAX))
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
    use super::super::component::build_calendars;
    use super::super::lines::parse_content_line;
    use super::*;
    use chrono::{Offset, TimeZone};

    /// The first VTIMEZONE of `blocks` (the lines inside BEGIN/END:VTIMEZONE).
    fn zone(blocks: &str) -> RuleZone {
        let text = format!("BEGIN:VCALENDAR\nBEGIN:VTIMEZONE\nTZID:T\n{blocks}END:VTIMEZONE\nEND:VCALENDAR\n");
        let lines = text.lines().filter_map(parse_content_line).collect();
        let calendars = build_calendars(lines, &mut Vec::new());
        let mut found = Vec::new();
        calendars.iter().for_each(|c| c.descendants("VTIMEZONE", &mut found));
        found.first().and_then(|v| RuleZone::from_component(v)).unwrap_or_else(|| panic!("no zone in {text}"))
    }

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn hours(offset: i32) -> f64 {
        f64::from(offset) / 3600.0
    }

    /// US Eastern as full-history producers write it: one block per rule
    /// change, the older rules ended by UNTIL.
    const US_EASTERN_HISTORY: &str = "BEGIN:STANDARD\nDTSTART:19671029T020000\nTZOFFSETFROM:-0400\n\
        TZOFFSETTO:-0500\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU;UNTIL=20061029T060000Z\nEND:STANDARD\n\
        BEGIN:DAYLIGHT\nDTSTART:19870405T020000\nTZOFFSETFROM:-0500\nTZOFFSETTO:-0400\n\
        RRULE:FREQ=YEARLY;BYMONTH=4;BYDAY=1SU;UNTIL=20060402T070000Z\nEND:DAYLIGHT\n\
        BEGIN:DAYLIGHT\nDTSTART:20070311T020000\nTZOFFSETFROM:-0500\nTZOFFSETTO:-0400\n\
        RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU\nEND:DAYLIGHT\n\
        BEGIN:STANDARD\nDTSTART:20071104T020000\nTZOFFSETFROM:-0400\nTZOFFSETTO:-0500\n\
        RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU\nEND:STANDARD\n";

    #[test]
    fn rule_history_with_until_matches_the_tz_database() {
        let zone = zone(US_EASTERN_HISTORY);
        let tz = chrono_tz::America::New_York;
        let mut day = at("1987-01-01 12:00");
        while day < at("2031-01-01 00:00") {
            let want = tz.offset_from_utc_datetime(&day).fix().local_minus_utc();
            assert_eq!(hours(zone.offset_at(day)), hours(want), "{day}");
            day += TimeDelta::days(1);
        }
        // Hours around the last change under the old rules and the first under the new.
        assert_eq!(hours(zone.offset_at(at("2006-10-29 05:59"))), -4.0);
        assert_eq!(hours(zone.offset_at(at("2006-10-29 06:00"))), -5.0);
        assert_eq!(hours(zone.offset_at(at("2007-03-11 06:59"))), -5.0);
        assert_eq!(hours(zone.offset_at(at("2007-03-11 07:00"))), -4.0);
    }

    #[test]
    fn rules_ended_long_ago_keep_their_last_onset() {
        // DST abolished after 2010; the daylight block starts later than the standard one.
        let zone = zone(
            "BEGIN:STANDARD\nDTSTART:19810927T030000\nTZOFFSETFROM:+0200\nTZOFFSETTO:+0100\n\
             RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU;UNTIL=20101031T010000Z\nEND:STANDARD\n\
             BEGIN:DAYLIGHT\nDTSTART:19960331T020000\nTZOFFSETFROM:+0100\nTZOFFSETTO:+0200\n\
             RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU;UNTIL=20100328T010000Z\nEND:DAYLIGHT\n",
        );
        assert_eq!(hours(zone.offset_at(at("2010-07-01 12:00"))), 2.0);
        assert_eq!(hours(zone.offset_at(at("2015-07-01 12:00"))), 1.0);
        assert_eq!(hours(zone.offset_at(at("2040-01-01 12:00"))), 1.0);
    }

    #[test]
    fn local_and_date_until_include_the_last_onset() {
        for until in ["20060402T020000", "20060402"] {
            let zone = zone(&format!(
                "BEGIN:STANDARD\nDTSTART:19671029T020000\nTZOFFSETFROM:-0400\nTZOFFSETTO:-0500\n\
                 RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\nEND:STANDARD\n\
                 BEGIN:DAYLIGHT\nDTSTART:19870405T020000\nTZOFFSETFROM:-0500\nTZOFFSETTO:-0400\n\
                 RRULE:FREQ=YEARLY;BYMONTH=4;BYDAY=1SU;UNTIL={until}\nEND:DAYLIGHT\n"
            ));
            assert_eq!(hours(zone.offset_at(at("2006-06-01 12:00"))), -4.0, "UNTIL={until}");
            assert_eq!(hours(zone.offset_at(at("2007-06-01 12:00"))), -5.0, "UNTIL={until}");
        }
    }

    #[test]
    fn count_and_interval_limit_the_rule() {
        let standard = "BEGIN:STANDARD\nDTSTART:19991031T030000\nTZOFFSETFROM:+0200\nTZOFFSETTO:+0100\n\
            RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\nEND:STANDARD\n";
        let daylight = |rule: &str| {
            format!(
                "{standard}BEGIN:DAYLIGHT\nDTSTART:20000326T020000\nTZOFFSETFROM:+0100\nTZOFFSETTO:+0200\n\
                 RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU;{rule}\nEND:DAYLIGHT\n"
            )
        };
        let counted = zone(&daylight("COUNT=3"));
        assert_eq!(hours(counted.offset_at(at("2002-07-01 12:00"))), 2.0);
        assert_eq!(hours(counted.offset_at(at("2003-07-01 12:00"))), 1.0);
        let none = zone(&daylight("COUNT=0"));
        assert_eq!(hours(none.offset_at(at("2001-07-01 12:00"))), 1.0);
        let every_other = zone(&daylight("INTERVAL=2"));
        assert_eq!(hours(every_other.offset_at(at("2002-07-01 12:00"))), 2.0);
        assert_eq!(hours(every_other.offset_at(at("2003-07-01 12:00"))), 1.0);
    }

    #[test]
    fn dated_blocks_and_rdate_lists_without_rules() {
        // Changes of base offset (dates from Moscow): three STANDARD blocks, no RRULE.
        let moscow = zone(
            "BEGIN:STANDARD\nDTSTART:19920119T020000\nTZOFFSETFROM:+0200\nTZOFFSETTO:+0300\nEND:STANDARD\n\
             BEGIN:STANDARD\nDTSTART:20110327T020000\nTZOFFSETFROM:+0300\nTZOFFSETTO:+0400\nEND:STANDARD\n\
             BEGIN:STANDARD\nDTSTART:20141026T020000\nTZOFFSETFROM:+0400\nTZOFFSETTO:+0300\nEND:STANDARD\n",
        );
        let cases = [("1980-06-01 12:00", 2.0), ("2000-06-01 12:00", 3.0), ("2012-01-01 12:00", 4.0)];
        for (when, want) in cases.into_iter().chain([("2014-10-25 21:59", 4.0), ("2014-10-25 22:00", 3.0)]) {
            assert_eq!(hours(moscow.offset_at(at(when))), want, "{when}");
        }
        // Onsets listed as comma-separated RDATEs.
        let listed = zone(
            "BEGIN:DAYLIGHT\nDTSTART:20000326T020000\nRDATE:20010325T020000,20020331T020000\n\
             TZOFFSETFROM:+0100\nTZOFFSETTO:+0200\nEND:DAYLIGHT\n\
             BEGIN:STANDARD\nDTSTART:20001029T030000\nRDATE:20011028T030000,20021027T030000\n\
             TZOFFSETFROM:+0200\nTZOFFSETTO:+0100\nEND:STANDARD\n",
        );
        let cases = [("2001-07-01 12:00", 2.0), ("2001-12-01 12:00", 1.0), ("2002-03-31 00:59", 1.0)];
        for (when, want) in cases.into_iter().chain([("2002-03-31 01:00", 2.0), ("2005-07-01 12:00", 1.0)]) {
            assert_eq!(hours(listed.offset_at(at(when))), want, "{when}");
        }
    }

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
