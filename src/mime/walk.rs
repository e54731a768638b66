//! The MIME tree walk: every calendar object at any depth, including inside
//! forwarded messages.
//!
//! mail-parser 0.11 keeps the parts of one message in a flat list linked by
//! ids, and gives a forwarded message/rfc822 part its own nested `Message`
//! (or leaves it as bytes when it was encoded too deep), so the walk recurses
//! on both and counts its own depth and parts.

use std::borrow::Cow;

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::parsers::MessageStream;
use mail_parser::{Encoding, Message, MessageParser, MessagePart, MimeHeaders, PartType};

use super::found::Found;
use super::sniff::starts_with_calendar;
use crate::model::CalendarPart;

/// Content types that declare an iCalendar object, lowercased.
const CALENDAR_TYPES: [&str; 5] =
    ["text/calendar", "text/x-vcalendar", "text/vcalendar", "application/ics", "application/calendar"];

/// File name endings of iCalendar / vCalendar attachments, lowercased.
const CALENDAR_EXTENSIONS: [&str; 2] = [".ics", ".vcs"];

/// Content types and file name of Outlook's TNEF container, which can hold a
/// meeting request that nothing here can read.
const TNEF_TYPES: [&str; 2] = ["application/ms-tnef", "application/vnd.ms-tnef"];
const TNEF_NAME: &str = "winmail.dat";
/// The problem recorded for TNEF, worded so the pipeline can pass it on as a hint.
const TNEF_HINT: &str = "TNEF (winmail.dat) attachment not read: ask the sender to forward the invite as iCalendar";

/// What one MIME part declares about itself.
struct Label {
    /// Lowercased `type/subtype`; `text/plain` when absent, as RFC 2045 says.
    content_type: String,
    method: Option<String>,
    charset: Option<String>,
    filename: Option<String>,
}

impl Label {
    fn of(part: &MessagePart<'_>) -> Self {
        let ct = part.content_type();
        let content_type = ct.map_or_else(
            || "text/plain".to_owned(),
            |ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()).to_lowercase(),
        );
        let attribute = |name: &str| ct.and_then(|ct| ct.attribute(name)).map(str::trim).filter(|v| !v.is_empty());
        Self {
            content_type,
            method: attribute("method").map(str::to_uppercase),
            charset: attribute("charset").map(str::to_lowercase),
            filename: part.attachment_name().map(str::to_owned),
        }
    }

    /// Whether the type or the file name says this is a calendar.
    fn names_calendar(&self) -> bool {
        let name = self.filename.as_deref().unwrap_or_default().to_lowercase();
        CALENDAR_TYPES.contains(&self.content_type.as_str())
            || CALENDAR_EXTENSIONS.iter().any(|ext| name.ends_with(ext))
    }

    fn is_tnef(&self) -> bool {
        TNEF_TYPES.contains(&self.content_type.as_str())
            || self.filename.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(TNEF_NAME))
    }

    fn is_forwarded_message(&self) -> bool {
        matches!(self.content_type.as_str(), "message/rfc822" | "message/global")
    }
}

/// Walks `msg` (nested `depth` levels deep) and adds what it finds to `found`.
pub(super) fn walk_message(msg: &Message<'_>, depth: usize, found: &mut Found<'_>) {
    let mut walk = Walk { found, parts_seen: 0, stopped: false };
    walk.message(msg, depth);
}

/// State of one walk: how many parts were looked at, and whether a limit
/// stopped it.
struct Walk<'f, 'l> {
    found: &'f mut Found<'l>,
    parts_seen: usize,
    stopped: bool,
}

impl Walk<'_, '_> {
    fn message(&mut self, msg: &Message<'_>, depth: usize) {
        let mut seen = vec![false; msg.parts.len()];
        self.part(msg, 0, depth, &mut seen);
    }

    /// Visits part `id` of `msg`. `seen` guards against ids that loop back.
    fn part(&mut self, msg: &Message<'_>, id: usize, depth: usize, seen: &mut [bool]) {
        let Some(part) = msg.parts.get(id) else {
            return;
        };
        if self.stopped || seen.get(id).copied().unwrap_or(true) || !self.within_limits(depth) {
            return;
        }
        seen[id] = true;
        let label = Label::of(part);
        match &part.body {
            PartType::Multipart(children) => {
                for &child in children {
                    self.part(msg, child as usize, depth + 1, seen);
                }
            }
            PartType::Message(inner) => self.message(inner, depth + 1),
            _ if label.is_forwarded_message() => self.reparse(msg, part, &label, depth + 1),
            _ => self.leaf(msg, part, &label),
        }
    }

    /// Counts one more part and checks both limits, recording the first breach.
    fn within_limits(&mut self, depth: usize) -> bool {
        let limits = self.found.limits();
        if depth > limits.max_depth {
            let text = format!("MIME nesting deeper than {} levels: deeper parts not read", limits.max_depth);
            self.found.problem(text);
            return false;
        }
        self.parts_seen += 1;
        if self.parts_seen > limits.max_parts {
            let text = format!("more than {} MIME parts: the rest not read", limits.max_parts);
            self.found.problem(text);
            self.stopped = true;
            return false;
        }
        true
    }

    /// A forwarded message that mail-parser left as bytes (encoded more than
    /// three levels deep, or damaged): parse it again, else treat it as a leaf.
    fn reparse(&mut self, msg: &Message<'_>, part: &MessagePart<'_>, label: &Label, depth: usize) {
        match MessageParser::new().parse(part.contents()) {
            Some(inner) => self.message(&inner, depth),
            None => self.leaf(msg, part, label),
        }
    }

    /// Keeps the part if it is a calendar by type, file name or content.
    fn leaf(&mut self, msg: &Message<'_>, part: &MessagePart<'_>, label: &Label) {
        if part.is_encoding_problem && !part.is_empty() {
            self.found.problem(format!("{} part with damaged encoding read as raw text", label.content_type));
        }
        if label.is_tnef() {
            self.found.problem(TNEF_HINT.to_owned());
            return;
        }
        let (bytes, charset) = body_bytes(msg, part, label);
        if label.names_calendar() || starts_with_calendar(&bytes) {
            self.found.keep(CalendarPart {
                bytes: bytes.into_owned(),
                content_type: label.content_type.clone(),
                method_param: label.method.clone(),
                charset,
                filename: label.filename.clone(),
            });
        }
    }
}

/// Transfer-decoded bytes of a leaf part and the charset they are in.
///
/// mail-parser turns text parts into a `String`: with a charset it knows that
/// is a faithful decoding, so it is kept as UTF-8. Without one (or for UTF-8)
/// it read the bytes as UTF-8, lossily: a text without U+FFFD is the bytes
/// exactly; one with U+FFFD may have lost Latin-1 or UTF-16 bytes, so the raw
/// body is transfer-decoded again. Either way the declared charset is kept.
fn body_bytes<'m>(msg: &'m Message<'_>, part: &'m MessagePart<'_>, label: &Label) -> (Cow<'m, [u8]>, Option<String>) {
    let declared = label.charset.clone();
    match &part.body {
        PartType::Text(text) | PartType::Html(text) => {
            let decoded = declared.as_deref().and_then(|c| charset_decoder(c.as_bytes())).is_some();
            if decoded {
                (Cow::Borrowed(text.as_bytes()), Some("utf-8".to_owned()))
            } else if !text.contains(char::REPLACEMENT_CHARACTER) {
                (Cow::Borrowed(text.as_bytes()), declared)
            } else {
                let bytes = transfer_decoded(msg, part).unwrap_or(Cow::Borrowed(text.as_bytes()));
                (bytes, declared)
            }
        }
        _ => (Cow::Borrowed(part.contents()), declared),
    }
}

/// The part's body bytes from the raw message, undoing base64 or
/// quoted-printable; `None` when the offsets or the encoding do not hold.
fn transfer_decoded<'m>(msg: &'m Message<'_>, part: &MessagePart<'_>) -> Option<Cow<'m, [u8]>> {
    let raw = msg.raw_message.get(part.offset_body as usize..part.offset_end as usize)?;
    let (end, bytes) = match part.encoding {
        Encoding::None => return Some(Cow::Borrowed(raw)),
        Encoding::Base64 => MessageStream::new(raw).decode_base64_mime(b""),
        Encoding::QuotedPrintable => MessageStream::new(raw).decode_quoted_printable_mime(b""),
    };
    (end != usize::MAX).then_some(bytes)
}
