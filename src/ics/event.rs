//! One VEVENT → `EventVersion`. Every field is read on its own, so one bad
//! property costs that field (and a problem line), never the event.

use chrono::{DateTime, TimeDelta, Utc};

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
}

/// `None` when the VEVENT has no UID (it is counted, not returned).
pub(super) fn read_event(event: &Component, calendar: &CalendarContext<'_>) -> Option<EventVersion> {
    let uid = event.prop("UID").and_then(|p| non_empty(p.value.trim())).or_else(|| calendar.uid.clone())?;
    let mut problems = Vec::new();
    let zones = calendar.zones;
    let start = first_instant(event, "DTSTART", zones, &mut problems);
    let end = end_of(event, start.as_ref(), zones, &mut problems);
    let mut version = EventVersion {
        uid,
        recurrence_id: first_instant(event, "RECURRENCE-ID", zones, &mut problems).map(|r| r.utc),
        sequence: sequence(event, &mut problems),
        dtstamp: dtstamp(event, &mut problems),
        method: calendar.method.clone(),
        status: event.prop("STATUS").and_then(|p| non_empty(&p.value.trim().to_ascii_uppercase())),
        start: start.as_ref().map(|s| s.utc),
        end,
        timezone: start.as_ref().and_then(|s| s.zone.clone()),
        all_day: start.as_ref().is_some_and(|s| s.date.is_some()),
        summary: text(event, "SUMMARY"),
        description: text(event, "DESCRIPTION"),
        location: text(event, "LOCATION"),
        organizer: event.prop("ORGANIZER").and_then(people::organizer),
        attendees: attendees(event),
        rrule: event.prop("RRULE").and_then(|p| non_empty(p.value.trim())),
        rdates: all_instants(event, "RDATE", zones, &mut problems),
        exdates: all_instants(event, "EXDATE", zones, &mut problems),
        links: collect_links(event),
        problems: Vec::new(),
    };
    dedup(&mut problems);
    version.problems = problems;
    Some(version)
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
        quoted_printable(&prop.value)
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

fn all_instants(event: &Component, name: &str, zones: &Zones, problems: &mut Vec<String>) -> Vec<DateTime<Utc>> {
    event.props_named(name).flat_map(|p| zones.resolve(p, problems)).map(|r| r.utc).collect()
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
