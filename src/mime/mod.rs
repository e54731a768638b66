//! Bytes of one mail → who sent it, to whom, and every calendar object in it. Pure.
//!
//! Invites arrive in every shape: inline text/calendar, `.ics` attachments under
//! any label, forwarded message/rfc822 parts (base64-encoded too), damaged
//! structure, or a bare `.ics` file fed directly. [`extract`] finds the calendar
//! in all of them and never fails: what it cannot read becomes a problem string.

mod found;
mod headers;
pub(crate) use headers::unfolded_value;
mod multipart;
mod sniff;
mod transfer;
mod walk;

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use mail_parser::{Message, MessageParser};

use crate::model::{CalendarPart, Extracted};
use found::Found;

/// Limits on the MIME walk. Hostile mail must not make it unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimeLimits {
    /// Deepest nesting of multiparts and forwarded messages followed.
    pub max_depth: usize,
    /// Most MIME parts looked at in one mail.
    pub max_parts: usize,
    /// Largest calendar object kept (bytes, decoded).
    pub max_calendar_bytes: usize,
}

impl Default for MimeLimits {
    fn default() -> Self {
        Self { max_depth: 16, max_parts: 1000, max_calendar_bytes: 1 << 20 }
    }
}

/// The `Message-ID` of a mail, read from its header block alone: cheap enough to log
/// and store with a message before it is acknowledged.
pub fn message_id(raw: &[u8]) -> Option<String> {
    MessageParser::new().parse_headers(raw).and_then(|m| m.message_id().map(str::to_string))
}

/// Walks the mail and returns its sender, recipients and calendar objects.
///
/// Input that is itself a calendar (a `.ics` file) comes back as one
/// `text/calendar` part without header facts.
pub fn extract(raw: &[u8], limits: &MimeLimits) -> Extracted {
    let mut found = Found::new(limits);
    let mut extracted = Extracted::default();
    if sniff::starts_with_calendar(raw) {
        found.keep(bare_calendar(raw));
    } else {
        read_mail(sniff::skip_blank_lines(raw), &mut found, &mut extracted);
    }
    extracted.calendars = found.calendars;
    extracted.problems = found.problems;
    extracted
}

/// Most message/rfc822 parts a mail may hold for its body to be walked, whatever
/// `max_parts` says; above it only the top headers are read. mail-parser, which
/// parsed whole mails before the walk had its own, built and dropped nested forwards
/// recursively (about 100,000 of them overflowed a 2 MiB thread stack); the walk
/// stops at `max_depth`, and this stays as a cheap bound counted before any parsing.
const MAX_FORWARDED_PARTS: usize = 1000;

fn read_mail(raw: &[u8], found: &mut Found<'_>, extracted: &mut Extracted) {
    let parser = MessageParser::new();
    match multipart::read_entity(&parser, raw) {
        Some(top) => {
            let msg = Message { parts: vec![top.headers], raw_message: Cow::Borrowed(raw), ..Message::default() };
            headers::read_header_facts(&msg, extracted);
            if let Some(headers) = msg.parts.first() {
                if within_forward_cap(raw, found) {
                    walk::walk_mail(&parser, headers, top.body, found);
                }
            }
        }
        None => found.problem("no mail headers found".to_owned()),
    }
    if found.calendars.is_empty() {
        recover_calendar_text(raw, found);
    }
}

/// Whether the mail holds few enough forwarded messages to be walked (see
/// [`MAX_FORWARDED_PARTS`]); records a problem when it does not.
fn within_forward_cap(raw: &[u8], found: &mut Found<'_>) -> bool {
    let forwards = sniff::count_forwarded_parts(raw);
    let cap = found.limits().max_parts.min(MAX_FORWARDED_PARTS);
    if forwards > cap {
        found.problem(format!("{forwards} forwarded message parts, more than {cap}: only the top headers read"));
    }
    forwards <= cap
}

/// Last resort when the MIME walk found nothing: calendar text that sits in
/// the mail outside any part we could recognise (an undeclared boundary, a
/// plain body with text before the calendar).
fn recover_calendar_text(raw: &[u8], found: &mut Found<'_>) {
    for span in sniff::calendar_spans(raw) {
        found.problem("calendar text recovered from outside the MIME structure".to_owned());
        found.keep(bare_calendar(&span));
    }
}

fn bare_calendar(bytes: &[u8]) -> CalendarPart {
    CalendarPart {
        bytes: bytes.to_vec(),
        content_type: "text/calendar".to_owned(),
        method_param: None,
        charset: None,
        filename: None,
    }
}
