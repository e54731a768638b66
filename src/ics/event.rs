//! One VEVENT → `EventVersion`. Every field is read on its own, so one bad
//! property costs that field (and a problem line), never the event.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use super::component::Component;
use super::decode::quoted_printable;
use super::lines::{unescape_text, ContentLine};
use super::links::collect_links;
use super::people;
use super::time::{parse_duration, stamp_utc, Resolved, Zones};
use crate::model::EventVersion;

/// What a VEVENT inherits from its VCALENDAR.
pub(super) struct CalendarContext<'a> {
    /// METHOD of the calendar, else the part's `method=` parameter, uppercased.
    pub method: Option<String>,
    /// A VCALENDAR-level UID, used by VEVENTs that have none (Meetup does this).
    pub uid: Option<String>,
    pub zones: &'a Zones,
    /// Whether each series (a VEVENT without RECURRENCE-ID) of the calendar is
    /// all-day, by UID: an override's RECURRENCE-ID is read the series' way.
    pub all_day_series: &'a HashMap<String, bool>,
}

/// `None` when the VEVENT has no UID (it is counted, not returned).
pub(super) fn read_event(event: &Component, calendar: &CalendarContext<'_>) -> Option<EventVersion> {
    let uid = event_uid(event, calendar)?;
    let mut problems = Vec::new();
    let zones = calendar.zones;
    let mut start = first_instant(event, "DTSTART", zones, &mut problems);
    let all_day = is_all_day(event, start.as_ref());
    let mut end = end_of(event, start.as_ref(), zones, &mut problems);
    if all_day && start.as_ref().is_some_and(|s| s.date.is_none()) {
        // X-MICROSOFT-CDO-ALLDAYEVENT:TRUE on DATE-TIMEs: rule 9 all the same.
        let (all_day_start, all_day_end) = as_all_day(event, start.as_ref(), zones, &mut problems);
        start = all_day_start;
        end = all_day_end;
    }
    let series_all_day = calendar.all_day_series.get(&uid).copied().unwrap_or(all_day);
    let instants = |name: &str, problems: &mut Vec<String>| -> Vec<Resolved> {
        event.props_named(name).flat_map(|p| zones.resolve(p, problems)).collect()
    };
    // An all-day series' occurrences start at local midnight (rule 9); ids and
    // exceptions written as DATE-TIMEs (Exchange writes midnight in its own zone)
    // name that day, so they are read as its local midnight too.
    let on_series_days = |values: Vec<Resolved>| -> Vec<DateTime<Utc>> {
        values
            .into_iter()
            .filter_map(|r| match (series_all_day, r.date, r.day()) {
                (true, None, Some(day)) => zones.local_midnight(day),
                _ => Some(r.utc),
            })
            .collect()
    };
    let recurrence_id = on_series_days(instants("RECURRENCE-ID", &mut problems).into_iter().take(1).collect());
    let mut version = EventVersion {
        uid,
        recurrence_id: recurrence_id.into_iter().next(),
        sequence: sequence(event, &mut problems),
        dtstamp: dtstamp(event, &mut problems),
        method: calendar.method.clone(),
        status: event.prop("STATUS").and_then(|p| non_empty(&p.value.trim().to_ascii_uppercase())),
        start: start.as_ref().map(|s| s.utc),
        end,
        timezone: start.as_ref().and_then(|s| s.zone.clone()),
        all_day,
        summary: text(event, "SUMMARY"),
        description: text(event, "DESCRIPTION"),
        location: text(event, "LOCATION"),
        organizer: event.prop("ORGANIZER").and_then(people::organizer),
        attendees: attendees(event),
        rrule: rrule_value(event, &mut problems),
        rdates: on_series_days(instants("RDATE", &mut problems)),
        exdates: on_series_days(instants("EXDATE", &mut problems)),
        links: collect_links(event),
        problems: Vec::new(),
    };
    dedup(&mut problems);
    version.problems = problems;
    Some(version)
}

fn event_uid(event: &Component, calendar: &CalendarContext<'_>) -> Option<String> {
    event.prop("UID").and_then(|p| non_empty(p.value.trim())).or_else(|| calendar.uid.clone())
}

/// Whether each series of the calendar is all-day, by UID (the first series wins).
pub(super) fn all_day_series(
    events: &[&Component],
    calendar_uid: Option<&str>,
    zones: &Zones,
) -> HashMap<String, bool> {
    let mut series = HashMap::new();
    for event in events.iter().filter(|e| e.prop("RECURRENCE-ID").is_none()) {
        let uid = event.prop("UID").and_then(|p| non_empty(p.value.trim())).or(calendar_uid.map(str::to_string));
        let Some(uid) = uid else {
            continue;
        };
        let start = first_instant(event, "DTSTART", zones, &mut Vec::new());
        series.entry(uid).or_insert_with(|| is_all_day(event, start.as_ref()));
    }
    series
}

/// A DATE start, or Outlook's X-MICROSOFT-CDO-ALLDAYEVENT:TRUE on a DATE-TIME one.
fn is_all_day(event: &Component, start: Option<&Resolved>) -> bool {
    let flagged =
        event.prop("X-MICROSOFT-CDO-ALLDAYEVENT").is_some_and(|p| p.value.trim().eq_ignore_ascii_case("TRUE"));
    start.is_some_and(|s| s.date.is_some() || flagged)
}

/// Rule 9 for an all-day event written with DATE-TIMEs: local midnight of the
/// start's day to local midnight of the end's day (at least one day later), in
/// the default zone.
fn as_all_day(
    event: &Component,
    start: Option<&Resolved>,
    zones: &Zones,
    problems: &mut Vec<String>,
) -> (Option<Resolved>, Option<DateTime<Utc>>) {
    let Some(first_day) = start.and_then(Resolved::day) else {
        return (None, None);
    };
    let end_day = first_instant(event, "DTEND", zones, problems)
        .and_then(|e| e.day())
        .or_else(|| {
            let days = event.prop("DURATION").and_then(|p| parse_duration(&p.value))?.num_days();
            first_day.checked_add_signed(TimeDelta::try_days(days)?)
        })
        .filter(|day| *day > first_day)
        .or_else(|| first_day.succ_opt());
    let start = zones.local_midnight(first_day).map(|utc| Resolved {
        utc,
        date: Some(first_day),
        zone: Some(zones.default_name().to_string()),
        wall: None,
    });
    (start, end_day.and_then(|d: NaiveDate| zones.local_midnight(d)))
}

/// The RRULE as written, if it can be a rule: RFC 5545's grammar is ASCII only, and
/// a non-ASCII one (a damaged byte) would crash the rrule crate (fuzz finding), so it
/// is dropped with a problem.
fn rrule_value(event: &Component, problems: &mut Vec<String>) -> Option<String> {
    let rule = event.prop("RRULE").and_then(|p| non_empty(p.value.trim()))?;
    if !rule.is_ascii() {
        problems.push("RRULE with non-ASCII characters ignored".to_string());
        return None;
    }
    Some(rule)
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

/// SEQUENCE, else Outlook's X-MICROSOFT-CDO-APPT-SEQUENCE, else 0 (rule 11).
fn sequence(event: &Component, problems: &mut Vec<String>) -> i64 {
    for name in ["SEQUENCE", "X-MICROSOFT-CDO-APPT-SEQUENCE"] {
        let Some(prop) = event.prop(name) else {
            continue;
        };
        match prop.value.trim().parse::<i64>() {
            Ok(n) => return n,
            Err(_) => problems.push(format!("unreadable {name} {:?}", prop.value.trim())),
        }
    }
    0
}

fn dtstamp(event: &Component, problems: &mut Vec<String>) -> Option<DateTime<Utc>> {
    let prop = event.prop("DTSTAMP")?;
    let stamp = stamp_utc(&prop.value);
    if stamp.is_none() {
        problems.push(format!("unreadable DTSTAMP value {:?}", prop.value.trim()));
    }
    stamp
}

/// First SUMMARY/DESCRIPTION/LOCATION, decoded and unescaped; empty → `None`.
fn text(event: &Component, name: &str) -> Option<String> {
    let prop = event.prop(name)?;
    non_empty(unescape_text(&decoded_value(prop)).trim())
}

/// vCalendar 1.0 values may be quoted-printable (`ENCODING=QUOTED-PRINTABLE` or a bare flag).
fn decoded_value(prop: &ContentLine) -> String {
    let qp = prop.param_is("ENCODING", "QUOTED-PRINTABLE") || prop.param("QUOTED-PRINTABLE").is_some();
    if qp {
        quoted_printable(&prop.value, prop.param("CHARSET"))
    } else {
        prop.value.clone()
    }
}

fn attendees(event: &Component) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for address in event.props_named("ATTENDEE").filter_map(people::address) {
        if !found.contains(&address) {
            found.push(address);
        }
    }
    found
}

fn first_instant(event: &Component, name: &str, zones: &Zones, problems: &mut Vec<String>) -> Option<Resolved> {
    zones.resolve(event.prop(name)?, problems).into_iter().next()
}

/// DTEND (exclusive), else DTSTART + DURATION, else one day for a date and
/// zero length for a date-time (RFC 5545 §3.6.1). DTEND wins over DURATION.
fn end_of(
    event: &Component,
    start: Option<&Resolved>,
    zones: &Zones,
    problems: &mut Vec<String>,
) -> Option<DateTime<Utc>> {
    if let Some(end) = first_instant(event, "DTEND", zones, problems) {
        return Some(end.utc);
    }
    let start = start?;
    let duration = event.prop("DURATION").and_then(|p| {
        let parsed = parse_duration(&p.value);
        if parsed.is_none() {
            problems.push(format!("unreadable DURATION value {:?}", p.value.trim()));
        }
        parsed
    });
    match (start.date, duration) {
        (Some(date), Some(d)) if d.num_seconds() % 86_400 == 0 => {
            zones.local_midnight(date.checked_add_signed(TimeDelta::try_days(d.num_days())?)?)
        }
        (_, Some(d)) => start.utc.checked_add_signed(d),
        (Some(date), None) => zones.local_midnight(date.succ_opt()?),
        (None, None) => Some(start.utc),
    }
}

fn dedup(problems: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert(p.clone()));
}
