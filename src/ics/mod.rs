//! One calendar object → normalised event versions. Pure.
//!
//! Our own tolerant reader, because real invites break strict parsers (see
//! `shared/notes/corpus-edge-cases.md` §3.2–3.5): one bad line costs that line,
//! never the calendar.
//!
//! ```text
//! bytes ─decode─► UTF-8 bytes ─lines─► content lines ─component─► VCALENDAR trees
//!       ─time (zones of each VCALENDAR)─► event ─► EventVersion
//! ```

mod cdo_zones;
mod component;
mod decode;
mod display_names;
mod event;
mod lines;
mod links;
mod people;
mod time;
mod vtimezone;

use crate::model::{CalendarPart, ParsedCalendar};
use component::{build_calendars, Component};
use event::{read_event, CalendarContext};
use lines::ContentLine;
use time::Zones;

/// Limits on reading one calendar object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcsLimits {
    /// Most VEVENTs read from one calendar part.
    pub max_events: usize,
    /// Longest unfolded content line kept (longer lines are reported and skipped).
    pub max_line_bytes: usize,
}

impl Default for IcsLimits {
    fn default() -> Self {
        Self { max_events: 500, max_line_bytes: 256 * 1024 }
    }
}

/// Reads every VEVENT of the part. Floating times and all-day dates are read in `default_tz`.
pub fn parse_calendar(part: &CalendarPart, default_tz: chrono_tz::Tz, limits: &IcsLimits) -> ParsedCalendar {
    let mut parsed = ParsedCalendar::default();
    let lines = read_lines(part, limits, &mut parsed.problems);
    let calendars = build_calendars(lines, &mut parsed.problems);
    let mut vevents_seen = 0;
    for calendar in &calendars {
        let method = calendar_method(calendar, part);
        let uid = calendar.prop("UID").map(|p| p.value.trim().to_string()).filter(|u| !u.is_empty());
        let mut vtimezones = Vec::new();
        calendar.descendants("VTIMEZONE", &mut vtimezones);
        let zones = Zones::new(&vtimezones, default_tz);
        let mut vevents = Vec::new();
        calendar.descendants("VEVENT", &mut vevents);
        let read = vevents.get(..limits.max_events).unwrap_or(&vevents);
        let all_day_series = event::all_day_series(read, uid.as_deref(), &zones);
        let context = CalendarContext { method, uid, zones: &zones, all_day_series: &all_day_series };
        for vevent in vevents {
            if vevents_seen >= limits.max_events {
                parsed.problems.push(format!("more than {} VEVENTs; the rest were skipped", limits.max_events));
                return parsed;
            }
            vevents_seen += 1;
            match read_event(vevent, &context) {
                Some(version) => parsed.events.push(version),
                None => parsed.events_without_uid += 1,
            }
        }
    }
    parsed
}

/// The VCALENDAR's METHOD (wherever it stands), else the Content-Type parameter.
fn calendar_method(calendar: &Component, part: &CalendarPart) -> Option<String> {
    calendar
        .prop("METHOD")
        .map(|p| p.value.trim().to_ascii_uppercase())
        .filter(|m| !m.is_empty())
        .or_else(|| part.method_param.as_ref().map(|m| m.trim().to_ascii_uppercase()))
        .filter(|m| !m.is_empty())
}

/// Decodes, unfolds and parses the lines, reporting what had to be guessed or dropped.
fn read_lines(part: &CalendarPart, limits: &IcsLimits, problems: &mut Vec<String>) -> Vec<ContentLine> {
    let bytes = decode::normalise_encoding(&part.bytes, problems);
    let fallback = decode::fallback_encoding(part.charset.as_deref());
    let (mut too_long, mut guessed, mut unreadable) = (0, 0, 0);
    let mut lines = Vec::new();
    let unfolded = lines::unfold(&bytes);
    if unfolded.broken_folds > 0 {
        problems.push(format!(
            "{} lines without leading whitespace read as continuations of the line before (broken folding)",
            unfolded.broken_folds
        ));
    }
    for raw in unfolded.lines {
        if raw.len() > limits.max_line_bytes {
            too_long += 1;
            continue;
        }
        let (text, was_guessed) = decode::line_text(&raw, fallback);
        guessed += usize::from(was_guessed);
        match lines::parse_content_line(&text) {
            Some(line) => lines.push(line),
            None => unreadable += 1,
        }
    }
    if too_long > 0 {
        problems.push(format!("{too_long} lines longer than {} bytes skipped", limits.max_line_bytes));
    }
    if guessed > 0 {
        let declared = part.charset.as_deref().unwrap_or("none declared");
        problems.push(format!("{guessed} lines not UTF-8 (charset: {declared}); read as {}", fallback.name()));
    }
    if unreadable > 0 {
        problems.push(format!("{unreadable} lines without a property shape skipped"));
    }
    lines
}

#[cfg(test)]
mod tests;
