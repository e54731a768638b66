//! Bytes of one mail → who sent it, to whom, and every calendar object in it. Pure.
//!
//! Invites arrive in every shape: inline text/calendar, `.ics` attachments under
//! any label, forwarded message/rfc822 parts (base64-encoded too), damaged
//! structure, or a bare `.ics` file fed directly. [`extract`] finds the calendar
//! in all of them and never fails: what it cannot read becomes a problem string.

mod found;
mod headers;
pub(crate) use headers::unfolded_value;
mod sniff;
mod walk;

#[cfg(test)]
mod tests;

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

/// Most message/rfc822 parts handed to mail-parser, whatever `max_parts` says.
/// It builds and drops nested forwards recursively: about 100,000 of them
/// overflowed a 2 MiB thread stack, 20,000 did not.
const MAX_FORWARDED_PARTS: usize = 1000;

fn read_mail(raw: &[u8], found: &mut Found<'_>, extracted: &mut Extracted) {
    match parse(raw, found) {
        Some(msg) => {
            headers::read_header_facts(&msg, extracted);
            walk::walk_message(&msg, 0, found);
        }
        None => found.problem("no mail headers found".to_owned()),
    }
    if found.calendars.is_empty() {
        recover_calendar_text(raw, found);
    }
}

/// Parses the mail, or only its top headers when it holds more forwarded
/// messages than can be parsed safely (see [`MAX_FORWARDED_PARTS`]).
fn parse<'r>(raw: &'r [u8], found: &mut Found<'_>) -> Option<Message<'r>> {
    let forwards = sniff::count_forwarded_parts(raw);
    let cap = found.limits().max_parts.min(MAX_FORWARDED_PARTS);
    if forwards > cap {
        found.problem(format!("{forwards} forwarded message parts, more than {cap}: only the top headers read"));
        MessageParser::new().parse_headers(raw)
    } else {
        MessageParser::new().parse(raw)
    }
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
