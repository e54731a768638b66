//! Date-time values and time zones → UTC. TZIDs are resolved in the order that
//! fixes the most real invites: IANA name, Windows name (rule 10), the
//! calendar's own VTIMEZONE, a Windows display name, an offset written in the
//! name; else the time is read as floating, with a problem.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use windows_timezones::WindowsTimezone;

use super::cdo_zones::cdo_zone;
use super::component::Component;
use super::display_names::DISPLAY_NAMES;
use super::lines::{unescape_text, ContentLine};
use super::vtimezone::RuleZone;

/// A DATE or DATE-TIME value as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Written {
    Date(NaiveDate),
    /// Local wall time; its zone comes from TZID or the default.
    Floating(NaiveDateTime),
    /// Already UTC (`Z`, or an explicit ISO offset applied).
    Utc(NaiveDateTime),
}

/// Reads `20200101`, `20200101T100000[Z]`, ISO 8601 `2020-01-01T10:00:00`
/// (also with `+02:00`), `HHMM` times and fractional seconds. `date_only`
/// (VALUE=DATE) drops any time part that is there anyway.
pub(super) fn parse_written(raw: &str, date_only: bool) -> Option<Written> {
    let text = raw.trim().trim_matches('"');
    let (date_text, time_text) = match text.find(['T', 't']) {
        Some(at) => (text.get(..at)?, text.get(at + 1..)),
        None => (text, None),
    };
    let date = parse_date(date_text)?;
    let Some(time_text) = time_text.filter(|_| !date_only) else {
        return Some(Written::Date(date));
    };
    let (time, offset) = parse_time(time_text)?;
    let local = date.and_time(time);
    Some(match offset {
        None => Written::Floating(local),
        Some(seconds) => Written::Utc(local.checked_sub_signed(TimeDelta::try_seconds(i64::from(seconds))?)?),
    })
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    let digits: String = text.chars().filter(|c| *c != '-').collect();
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| digits.get(range).and_then(|s| s.parse::<u32>().ok());
    NaiveDate::from_ymd_opt(i32::try_from(number(0..4)?).ok()?, number(4..6)?, number(6..8)?)
}

/// Returns the time and, when the value carries one, its offset east of UTC in seconds (`Z` = 0).
fn parse_time(text: &str) -> Option<(NaiveTime, Option<i32>)> {
    let (clock, offset) = if let Some(clock) = text.strip_suffix(['Z', 'z']) {
        (clock, Some(0))
    } else if let Some(at) = text.find(['+', '-']) {
        (text.get(..at)?, Some(parse_utc_offset(text.get(at..)?)?))
    } else {
        (text, None)
    };
    let whole = clock.split(['.', ',']).next()?;
    let digits: String = whole.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| digits.get(range).and_then(|s| s.parse::<u32>().ok());
    let seconds = match digits.len() {
        6 => number(4..6)?.min(59),
        4 => 0,
        _ => return None,
    };
    Some((NaiveTime::from_hms_opt(number(0..2)?, number(2..4)?, seconds)?, offset))
}

/// `+0100`, `-0800`, `+013952`, `-000115`, `+01:00` → seconds east of UTC.
pub(super) fn parse_utc_offset(text: &str) -> Option<i32> {
    let text = text.trim();
    let (sign, rest) = match text.as_bytes().first()? {
        b'-' => (-1, text.get(1..)?),
        b'+' => (1, text.get(1..)?),
        _ => (1, text),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| digits.get(range).and_then(|s| s.parse::<i32>().ok());
    let (hours, minutes, seconds) = match digits.len() {
        2 => (number(0..2)?, 0, 0),
        4 => (number(0..2)?, number(2..4)?, 0),
        6 => (number(0..2)?, number(2..4)?, number(4..6)?),
        _ => return None,
    };
    (hours < 24 && minutes < 60 && seconds < 60).then_some(sign * (hours * 3600 + minutes * 60 + seconds))
}

/// RFC 5545 DURATION: `[+-]P[nW][nD][T[nH][nM][nS]]`.
pub(super) fn parse_duration(text: &str) -> Option<TimeDelta> {
    let text = text.trim();
    let (sign, rest) = match text.as_bytes().first()? {
        b'-' => (-1, text.get(1..)?),
        b'+' => (1, text.get(1..)?),
        _ => (1, text),
    };
    let body = rest.strip_prefix(['P', 'p'])?;
    let mut total: i64 = 0;
    let mut number: Option<i64> = None;
    for c in body.chars() {
        if let Some(digit) = c.to_digit(10) {
            number = Some(number.unwrap_or(0).checked_mul(10)?.checked_add(i64::from(digit))?);
            continue;
        }
        let unit = match c.to_ascii_uppercase() {
            'T' => continue,
            'W' => 7 * 86_400,
            'D' => 86_400,
            'H' => 3_600,
            'M' => 60,
            'S' => 1,
            _ => return None,
        };
        total = total.checked_add(number.take()?.checked_mul(unit)?)?;
    }
    if number.is_some() {
        return None;
    }
    TimeDelta::try_seconds(sign * total)
}

/// Where a local time is anchored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Zone {
    Iana(Tz),
    /// Index into `Zones::rule_zones` (a VTIMEZONE without an IANA name).
    Rules(usize),
    /// Seconds east of UTC, read from a display name.
    Fixed(i32),
}

/// One value resolved to UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resolved {
    pub utc: DateTime<Utc>,
    /// Set when the value was a DATE.
    pub date: Option<NaiveDate>,
    /// IANA name of the zone it was written in (`UTC` for `Z`).
    pub zone: Option<String>,
    /// The wall-clock time as written, for a DATE-TIME with a TZID or floating.
    pub wall: Option<NaiveDateTime>,
}

impl Resolved {
    /// The calendar day this value names, for reading it as all-day: the DATE,
    /// else the written wall-clock date, else (a UTC time) the nearest UTC
    /// midnight's date, since all-day UTC stamps are a local midnight within
    /// ±12 hours of it.
    pub fn day(&self) -> Option<NaiveDate> {
        if let Some(date) = self.date.or(self.wall.map(|w| w.date())) {
            return Some(date);
        }
        Some(self.utc.checked_add_signed(TimeDelta::try_hours(12)?)?.date_naive())
    }
}

/// The zones one VCALENDAR can refer to.
pub(super) struct Zones {
    default_tz: Tz,
    /// Zone of each usable VTIMEZONE, by lowercased normalised TZID.
    vtimezones: HashMap<String, Zone>,
    rule_zones: Vec<RuleZone>,
}

impl Zones {
    pub fn new(vtimezones: &[&Component], default_tz: Tz) -> Self {
        let mut zones = Self { default_tz, vtimezones: HashMap::new(), rule_zones: Vec::new() };
        for vtimezone in vtimezones {
            let Some(tzid) = vtimezone.prop("TZID").map(|p| normalise_tzid(&p.value).to_lowercase()) else {
                continue;
            };
            if zones.vtimezones.contains_key(&tzid) {
                continue;
            }
            if let Some(zone) = zones.zone_of_vtimezone(vtimezone) {
                zones.vtimezones.insert(tzid, zone);
            }
        }
        zones
    }

    /// X-LIC-LOCATION / X-MICROSOFT-CDO-TZID may name the IANA zone; else the
    /// rules; else a numeric X-MICROSOFT-CDO-TZID (Exchange's zone number).
    fn zone_of_vtimezone(&mut self, vtimezone: &Component) -> Option<Zone> {
        const CDO_TZID: &str = "X-MICROSOFT-CDO-TZID";
        let named = ["X-LIC-LOCATION", CDO_TZID]
            .iter()
            .filter_map(|name| vtimezone.prop(name))
            .find_map(|p| iana_zone(p.value.trim()));
        if let Some(tz) = named {
            return Some(Zone::Iana(tz));
        }
        if let Some(rules) = RuleZone::from_component(vtimezone) {
            self.rule_zones.push(rules);
            return Some(Zone::Rules(self.rule_zones.len() - 1));
        }
        vtimezone.prop(CDO_TZID).and_then(|p| cdo_zone(&p.value)).map(Zone::Iana)
    }

    /// IANA name of the zone floating times and dates are read in.
    pub fn default_name(&self) -> &'static str {
        self.default_tz.name()
    }

    /// Dates are read in the default zone (rule 9): their day starts at local midnight.
    pub fn local_midnight(&self, date: NaiveDate) -> Option<DateTime<Utc>> {
        self.to_utc(Zone::Iana(self.default_tz), date.and_hms_opt(0, 0, 0)?)
    }

    /// Resolves a TZID parameter. The note says what was guessed or not found.
    pub fn zone_for(&self, tzid: &str) -> (Zone, Option<String>) {
        let name = normalise_tzid(tzid);
        if let Some(tz) = iana_zone(&name).or_else(|| windows_zone(&name)) {
            return (Zone::Iana(tz), None);
        }
        if let Some(zone) = self.vtimezones.get(&name.to_lowercase()) {
            return (*zone, None);
        }
        if let Some(tz) = display_name_zone(&name) {
            return (Zone::Iana(tz), None);
        }
        if let Some(tz) = abbreviated_windows_zone(&name) {
            let note = format!("TZID {name:?} read as the Windows zone {:?}", format!("{name} Standard Time"));
            return (Zone::Iana(tz), Some(note));
        }
        if let Some(offset) = display_name_offset(&name) {
            return (Zone::Fixed(offset), Some(format!("TZID {name:?} read as a fixed offset")));
        }
        let note = format!("unknown TZID {name:?}; read as floating in {}", self.default_tz.name());
        (Zone::Iana(self.default_tz), Some(note))
    }

    /// IANA name of the zone, when it has one.
    pub fn zone_name(&self, zone: Zone) -> Option<String> {
        match zone {
            Zone::Iana(tz) => Some(tz.name().to_string()),
            Zone::Rules(_) | Zone::Fixed(_) => None,
        }
    }

    /// Local wall time → UTC. In a DST gap the clock shifts forward (the offset
    /// before the gap applies, as RFC 5545 §3.3.5 says); in a fold the earlier
    /// instant wins.
    pub fn to_utc(&self, zone: Zone, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        let day = TimeDelta::try_days(1)?;
        let before = self.offset_at(zone, local.checked_sub_signed(day)?);
        let after = self.offset_at(zone, local.checked_add_signed(day)?);
        let shift = |offset: i32| local.checked_sub_signed(TimeDelta::try_seconds(i64::from(offset))?);
        let valid = [before, after]
            .into_iter()
            .filter(|offset| shift(*offset).is_some_and(|utc| self.offset_at(zone, utc) == *offset))
            .max();
        shift(valid.unwrap_or(before)).map(|utc| utc.and_utc())
    }

    fn offset_at(&self, zone: Zone, utc: NaiveDateTime) -> i32 {
        match zone {
            Zone::Fixed(seconds) => seconds,
            Zone::Iana(tz) => tz.offset_from_utc_datetime(&utc).fix().local_minus_utc(),
            Zone::Rules(index) => self.rule_zones.get(index).map_or(0, |r| r.offset_at(utc)),
        }
    }

    /// Every value of a DATE/DATE-TIME property (comma lists; a PERIOD gives its
    /// start). The TZID is resolved once per property; unreadable values are
    /// skipped and reported once per property, with a count.
    pub fn resolve(&self, prop: &ContentLine, problems: &mut Vec<String>) -> Vec<Resolved> {
        let date_only = prop.param_is("VALUE", "DATE");
        let mut zone = None;
        let mut bad: Vec<&str> = Vec::new();
        let mut resolved = Vec::new();
        for piece in prop.value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let start = piece.split('/').next().unwrap_or(piece);
            match parse_written(start, date_only).and_then(|w| self.resolve_written(prop, w, &mut zone, problems)) {
                Some(value) => resolved.push(value),
                None => bad.push(piece),
            }
        }
        if let Some(first) = bad.first() {
            let more = if bad.len() > 1 { format!(" and {} more", bad.len() - 1) } else { String::new() };
            problems.push(format!("unreadable {} value {first:?}{more}", prop.name));
        }
        resolved
    }

    /// `zone` caches the property's TZID resolution across its values.
    fn resolve_written(
        &self,
        prop: &ContentLine,
        written: Written,
        zone: &mut Option<Zone>,
        problems: &mut Vec<String>,
    ) -> Option<Resolved> {
        match written {
            Written::Date(date) => {
                let utc = self.local_midnight(date)?;
                Some(Resolved { utc, date: Some(date), zone: Some(self.default_tz.name().to_string()), wall: None })
            }
            Written::Utc(naive) => {
                Some(Resolved { utc: naive.and_utc(), date: None, zone: Some("UTC".into()), wall: None })
            }
            Written::Floating(local) => {
                let zone = *zone.get_or_insert_with(|| self.property_zone(prop, problems));
                let utc = self.to_utc(zone, local)?;
                Some(Resolved { utc, date: None, zone: self.zone_name(zone), wall: Some(local) })
            }
        }
    }

    fn property_zone(&self, prop: &ContentLine, problems: &mut Vec<String>) -> Zone {
        let Some(tzid) = prop.param("TZID") else {
            return Zone::Iana(self.default_tz);
        };
        let (zone, note) = self.zone_for(tzid);
        problems.extend(note);
        zone
    }
}

/// DTSTAMP is UTC by definition; a value without `Z` is read as UTC anyway.
pub(super) fn stamp_utc(raw: &str) -> Option<DateTime<Utc>> {
    match parse_written(raw, false)? {
        Written::Date(date) => date.and_hms_opt(0, 0, 0).map(|n| n.and_utc()),
        Written::Floating(naive) | Written::Utc(naive) => Some(naive.and_utc()),
    }
}

/// TZIDs are compared after undoing `\,` escapes and stripping spaces and quotes.
fn normalise_tzid(raw: &str) -> String {
    unescape_text(raw).trim().trim_matches('"').trim().to_string()
}

/// Every IANA zone by its lowercased name (the first, where names differ only in case).
static IANA_BY_LOWERCASE: LazyLock<HashMap<String, Tz>> = LazyLock::new(|| {
    let mut zones = HashMap::with_capacity(chrono_tz::TZ_VARIANTS.len());
    for tz in chrono_tz::TZ_VARIANTS {
        zones.entry(tz.name().to_ascii_lowercase()).or_insert(tz);
    }
    zones
});

/// An IANA name, any case; also Mozilla's old `/mozilla.org/20070129_1/Europe/Berlin`.
fn iana_zone(name: &str) -> Option<Tz> {
    if let Ok(tz) = Tz::from_str(name) {
        return Some(tz);
    }
    if let Some(tz) = IANA_BY_LOWERCASE.get(&name.to_ascii_lowercase()) {
        return Some(*tz);
    }
    if name.starts_with('/') {
        return name.match_indices('/').find_map(|(at, _)| name.get(at + 1..).and_then(|s| Tz::from_str(s).ok()));
    }
    None
}

/// Windows zone id → CLDR territory 001 zone (rule 10).
fn windows_zone(name: &str) -> Option<Tz> {
    let windows = WindowsTimezone::from_str(name).ok()?;
    Tz::from_str(windows.tzdb_id()).ok()
}

/// Lotus Notes / Domino write the Windows id without " Standard Time" (`FLE`,
/// `Eastern`); tried only after the calendar's own VTIMEZONE.
fn abbreviated_windows_zone(name: &str) -> Option<Tz> {
    let has_letters = name.bytes().any(|b| b.is_ascii_alphabetic());
    let already = name.to_ascii_lowercase().contains("time");
    (has_letters && !already).then(|| windows_zone(&format!("{name} Standard Time"))).flatten()
}

/// "(UTC+01:00) Amsterdam, Berlin, …" or the older "(GMT+10:00) Canberra, …".
fn display_name_zone(name: &str) -> Option<Tz> {
    let key = display_key(name)?;
    let (_, iana) = DISPLAY_NAMES.iter().find(|(k, _)| *k == key)?;
    Tz::from_str(iana).ok()
}

fn display_key(name: &str) -> Option<String> {
    let (_, places) = name.strip_prefix('(')?.split_once(')')?;
    Some(places.trim().to_lowercase().replace(" and ", " & "))
}

/// The offset written after `UTC`/`GMT` in a display name: `(UTC+01:00)`,
/// `(GMT+01.00)`, `GMT +0100`, `UTC-5`.
fn display_name_offset(name: &str) -> Option<i32> {
    let upper = name.to_ascii_uppercase();
    let at = upper.find("UTC").or_else(|| upper.find("GMT"))?;
    let rest = upper.get(at + 3..)?.trim_start();
    let sign = match rest.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let number: String =
        rest.get(1..)?.trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == ':' || *c == '.').collect();
    let (hours, minutes) = match number.split_once([':', '.']) {
        Some((h, m)) => (h.parse::<i32>().ok()?, m.parse::<i32>().ok()?),
        None if number.len() <= 2 => (number.parse().ok()?, 0),
        None => {
            let split = number.len() - 2;
            (number.get(..split)?.parse().ok()?, number.get(split..)?.parse().ok()?)
        }
    };
    (hours <= 14 && minutes < 60).then_some(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::super::lines::parse_content_line;
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).map(|d| d.with_timezone(&Utc)).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn written_forms() {
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default();
        let at = |y, m, d, h, mi, s| date(y, m, d).and_hms_opt(h, mi, s).unwrap_or_default();
        let cases: &[(&str, bool, Option<Written>)] = &[
            ("20200101", false, Some(Written::Date(date(2020, 1, 1)))),
            ("20200612T000000", true, Some(Written::Date(date(2020, 6, 12)))),
            ("20200101T100000Z", false, Some(Written::Utc(at(2020, 1, 1, 10, 0, 0)))),
            ("20200101T100000", false, Some(Written::Floating(at(2020, 1, 1, 10, 0, 0)))),
            ("2023-07-01T125700", false, Some(Written::Floating(at(2023, 7, 1, 12, 57, 0)))),
            ("2023-07-01T12:26:00Z", false, Some(Written::Utc(at(2023, 7, 1, 12, 26, 0)))),
            ("2023-07-01T12:26:00+02:00", false, Some(Written::Utc(at(2023, 7, 1, 10, 26, 0)))),
            ("20200101T1000", false, Some(Written::Floating(at(2020, 1, 1, 10, 0, 0)))),
            ("20200101T100000.000Z", false, Some(Written::Utc(at(2020, 1, 1, 10, 0, 0)))),
            ("199706211T173000Z", false, None),
            ("20201301T100000", false, None),
            ("20200101T250000", false, None),
            ("", false, None),
            ("garbage", false, None),
        ];
        for (input, date_only, want) in cases {
            assert_eq!(parse_written(input, *date_only), *want, "{input}");
        }
    }

    #[test]
    fn offsets_and_durations() {
        let offsets = [
            ("+0100", Some(3600)),
            ("-0800", Some(-28800)),
            ("+013952", Some(3600 + 39 * 60 + 52)),
            ("-000115", Some(-75)),
            ("+01:00", Some(3600)),
            ("+2500", None),
            ("x", None),
        ];
        for (input, want) in offsets {
            assert_eq!(parse_utc_offset(input), want, "{input}");
        }
        let durations = [
            ("PT1H", Some(3600)),
            ("P1D", Some(86400)),
            ("P1W", Some(604800)),
            ("-PT15M", Some(-900)),
            ("P1DT2H3M4S", Some(93784)),
            ("PT", Some(0)),
            ("P1", None),
            ("1H", None),
            ("PT99999999999999999999H", None),
        ];
        for (input, want) in durations {
            assert_eq!(parse_duration(input).map(|d| d.num_seconds()), want, "{input}");
        }
        let display = [
            ("(UTC+01:00) Amsterdam", Some(3600)),
            ("(GMT+01.00) Sarajevo", Some(3600)),
            ("GMT +0100 (Standard)", Some(3600)),
            ("UTC-5", Some(-18000)),
            ("(UTC+05:30) Chennai", Some(19800)),
            ("Eastern", None),
        ];
        for (input, want) in display {
            assert_eq!(display_name_offset(input), want, "{input}");
        }
    }

    fn resolve_one(zones: &Zones, line: &str) -> (Option<Resolved>, Vec<String>) {
        let prop = parse_content_line(line).unwrap_or_else(|| panic!("{line}"));
        let mut problems = Vec::new();
        let got = zones.resolve(&prop, &mut problems).into_iter().next();
        (got, problems)
    }

    #[test]
    fn time_forms() {
        let zones = Zones::new(&[], chrono_tz::America::New_York);
        let cases: &[(&str, &str, Option<&str>, usize)] = &[
            ("DTSTART:20200101T100000Z", "2020-01-01T10:00:00Z", Some("UTC"), 0),
            ("DTSTART;TZID=Europe/London:20140130T140000Z", "2014-01-30T14:00:00Z", Some("UTC"), 0),
            ("DTSTART;TZID=Europe/Berlin:20200609T090000", "2020-06-09T07:00:00Z", Some("Europe/Berlin"), 0),
            ("DTSTART;TZID=\"Europe/Madrid\":20120302T070000", "2012-03-02T06:00:00Z", Some("Europe/Madrid"), 0),
            ("DTSTART;TZID=europe/berlin:20200109T090000", "2020-01-09T08:00:00Z", Some("Europe/Berlin"), 0),
            (
                "DTSTART;TZID=/mozilla.org/20070129_1/Europe/Berlin:20200109T090000",
                "2020-01-09T08:00:00Z",
                Some("Europe/Berlin"),
                0,
            ),
            (
                "DTSTART;TZID=Pacific Standard Time:20170224T120000",
                "2017-02-24T20:00:00Z",
                Some("America/Los_Angeles"),
                0,
            ),
            ("DTSTART;TZID=W. Europe Standard Time:20200609T090000", "2020-06-09T07:00:00Z", Some("Europe/Berlin"), 0),
            ("DTSTART;TZID=Romance Standard Time:20200109T090000", "2020-01-09T08:00:00Z", Some("Europe/Paris"), 0),
            (
                "DTSTART;TZID=\"(GMT+10:00) Canberra, Melbourne, Sydney\":20201028T133000",
                "2020-10-28T02:30:00Z",
                Some("Australia/Sydney"),
                0,
            ),
            (
                "DTSTART;TZID=\"(UTC-05:00) Eastern Time (US and Canada)\":20150706T120000",
                "2015-07-06T16:00:00Z",
                Some("America/New_York"),
                0,
            ),
            ("DTSTART;TZID=\"(GMT+01.00) Somewhere\":20200609T090000", "2020-06-09T08:00:00Z", None, 1),
            ("DTSTART;TZID=Nowhere:20200609T090000", "2020-06-09T13:00:00Z", Some("America/New_York"), 1),
            // Lotus Notes' short Windows ids, with no VTIMEZONE: EEST (+3) on 26 October 2021.
            ("DTSTART;TZID=\"FLE\":20211026T090000", "2021-10-26T06:00:00Z", Some("Europe/Kiev"), 1),
            ("DTSTART;TZID=Eastern:20050411T090000", "2005-04-11T13:00:00Z", Some("America/New_York"), 1),
            ("DTSTART:20200609T090000", "2020-06-09T13:00:00Z", Some("America/New_York"), 0),
            ("DTSTART;VALUE=DATE:20200609", "2020-06-09T04:00:00Z", Some("America/New_York"), 0),
            ("DTSTART:2020-06-09", "2020-06-09T04:00:00Z", Some("America/New_York"), 0),
            // DST gap: 02:30 does not exist on 2020-03-08 in New York; the clock shifts forward to 03:30 EDT.
            ("DTSTART:20200308T023000", "2020-03-08T07:30:00Z", Some("America/New_York"), 0),
            // Fold: 01:30 happens twice on 2020-11-01; the earlier (EDT) instant wins.
            ("DTSTART:20201101T013000", "2020-11-01T05:30:00Z", Some("America/New_York"), 0),
        ];
        for (line, want, zone, nproblems) in cases {
            let (got, problems) = resolve_one(&zones, line);
            let got = got.unwrap_or_else(|| panic!("{line}: {problems:?}"));
            assert_eq!(got.utc, utc(want), "{line}");
            assert_eq!(got.zone.as_deref(), *zone, "{line}");
            assert_eq!(problems.len(), *nproblems, "{line}: {problems:?}");
        }
    }

    #[test]
    fn lists_and_bad_values() {
        let zones = Zones::new(&[], chrono_tz::UTC);
        let prop = parse_content_line("RDATE;VALUE=PERIOD:20231125T090000Z/20231125T123000Z,20231126T090000Z/PT1H,bad");
        let mut problems = Vec::new();
        let got: Vec<_> =
            prop.map(|p| zones.resolve(&p, &mut problems)).unwrap_or_default().into_iter().map(|r| r.utc).collect();
        assert_eq!(got, vec![utc("2023-11-25T09:00:00Z"), utc("2023-11-26T09:00:00Z")]);
        assert_eq!(problems.len(), 1);
        assert_eq!(stamp_utc("20180108T124152"), Some(utc("2018-01-08T12:41:52Z")));
    }
}
