//! What the walk has found so far: calendars, deduplicated and size-limited,
//! and the problems noticed on the way.

use super::sniff::same_text;
use super::MimeLimits;
use crate::model::CalendarPart;

/// Collects calendar parts and problems while the mail is walked.
pub(super) struct Found<'l> {
    limits: &'l MimeLimits,
    /// The calendars kept, each once: the same invite often comes as an inline
    /// text/calendar part and again as an `.ics` attachment.
    pub(super) calendars: Vec<CalendarPart>,
    pub(super) problems: Vec<String>,
}

impl<'l> Found<'l> {
    pub(super) fn new(limits: &'l MimeLimits) -> Self {
        Self { limits, calendars: Vec::new(), problems: Vec::new() }
    }

    pub(super) fn limits(&self) -> &'l MimeLimits {
        self.limits
    }

    /// Keeps `part` unless it is too large, empty, or a copy of one already kept.
    pub(super) fn keep(&mut self, part: CalendarPart) {
        if part.bytes.len() > self.limits.max_calendar_bytes {
            self.problem(format!(
                "{} part of {} bytes skipped: larger than the {}-byte calendar limit",
                part.content_type,
                part.bytes.len(),
                self.limits.max_calendar_bytes
            ));
            return;
        }
        if part.bytes.trim_ascii().is_empty() {
            self.problem(format!("empty {} part skipped", part.content_type));
        } else if !self.calendars.iter().any(|kept| same_text(&kept.bytes, &part.bytes)) {
            self.calendars.push(part);
        }
    }

    /// Records a problem once, however many parts show it.
    pub(super) fn problem(&mut self, text: String) {
        if !self.problems.contains(&text) {
            self.problems.push(text);
        }
    }
}
