//! The MIME tree walk: every calendar object at any depth, including inside
//! forwarded messages.
//!
//! The walk reads the raw bytes itself: each entity's header block is parsed by
//! mail-parser ([`multipart::read_entity`]), multipart bodies are split at their
//! boundaries ([`multipart::split`]), and a forwarded message (message/rfc822 or
//! message/global, base64- or quoted-printable-encoded too) is transfer-decoded
//! and walked as an entity of its own. It counts its own depth and parts.
//!
//! Bodies are decoded lazily. A part labelled calendar (type or file name) is
//! transfer- and charset-decoded whole; any other part only as far as needed to
//! see whether it starts with a calendar (a few hundred bytes for a text or HTML
//! body), and whole only if it does. mail-parser, which decoded every body of the
//! mail, cost two thirds of the instructions of extracting a typical invite.

use std::borrow::Cow;

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::decoders::charsets::DecoderFnc;
use mail_parser::{MessageParser, MessagePart, MimeHeaders};

use super::found::Found;
use super::multipart::{self, read_entity};
use super::sniff::prefix_starts_with_calendar;
use super::transfer::{self, Damaged, Transfer};
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

/// Decoded bytes of a part first looked at for `BEGIN:VCALENDAR`; four times
/// more each time the answer is still open (a long run of blank lines).
const FIRST_SNIFF_BYTES: usize = 256;
/// Decoded text near the end of a prefix that a charset decoder may have read
/// from a character cut in two; not trusted when sniffing.
const CUT_CHARACTER_BYTES: usize = 16;

/// What one MIME entity declares about itself.
struct Label<'h> {
    /// Lowercased `type/subtype`; `text/plain` when absent, as RFC 2045 says
    /// (`message/rfc822` inside multipart/digest, RFC 2046 §5.1.5).
    content_type: String,
    method: Option<String>,
    /// The declared charset, trimmed and lowercased.
    charset: Option<String>,
    /// The charset parameter as written, for mail-parser's charset decoders.
    charset_written: Option<&'h str>,
    filename: Option<String>,
    transfer: Transfer,
}

impl<'h> Label<'h> {
    fn of(part: &'h MessagePart<'_>, in_digest: bool) -> Self {
        let ct = part.content_type();
        let content_type = match ct {
            Some(ct) => format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()).to_lowercase(),
            None if in_digest => "message/rfc822".to_owned(),
            None => "text/plain".to_owned(),
        };
        let attribute = |name: &str| ct.and_then(|ct| ct.attribute(name)).map(str::trim).filter(|v| !v.is_empty());
        Self {
            content_type,
            method: attribute("method").map(str::to_uppercase),
            charset: attribute("charset").map(str::to_lowercase),
            charset_written: ct.and_then(|ct| ct.attribute("charset")),
            filename: part.attachment_name().map(str::to_owned),
            transfer: Transfer::named(part.content_transfer_encoding()),
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

    fn is_multipart(&self) -> bool {
        self.content_type.starts_with("multipart/")
    }

    /// Whether the body is text, to be turned into UTF-8 from its declared charset:
    /// text/*, and a multipart that could not be split.
    fn is_text(&self) -> bool {
        self.content_type.starts_with("text/") || self.is_multipart()
    }

    /// The decoder to UTF-8 for a text body in the declared charset, if mail-parser has one.
    fn text_decoder(&self, is_text: bool) -> Option<DecoderFnc> {
        self.charset_written.filter(|_| is_text).and_then(|c| charset_decoder(c.as_bytes()))
    }
}

/// Walks the entity with `headers` and `body` (the whole mail: depth 0) and adds
/// what it finds to `found`.
pub(super) fn walk_mail(parser: &MessageParser, headers: &MessagePart<'_>, body: &[u8], found: &mut Found<'_>) {
    let mut walk = Walk { parser, found, parts_seen: 0, stopped: false };
    walk.entity(headers, body, 0, false);
}

/// State of one walk: how many parts were looked at, and whether a limit
/// stopped it.
struct Walk<'p, 'f, 'l> {
    parser: &'p MessageParser,
    found: &'f mut Found<'l>,
    parts_seen: usize,
    stopped: bool,
}

impl Walk<'_, '_, '_> {
    /// Visits one entity `depth` levels down; `in_digest` when its parent is a multipart/digest.
    fn entity(&mut self, headers: &MessagePart<'_>, body: &[u8], depth: usize, in_digest: bool) {
        if self.stopped || !self.within_limits(depth) {
            return;
        }
        let label = Label::of(headers, in_digest);
        if label.is_multipart() {
            let boundary = headers.content_type().and_then(|ct| ct.attribute("boundary"));
            let budget = self.found.limits().max_parts.saturating_sub(self.parts_seen).saturating_add(1);
            if let Some(split) = boundary.and_then(|b| multipart::split(body, b.as_bytes(), budget)) {
                let digest = label.content_type == "multipart/digest";
                for part in split.parts {
                    match read_entity(self.parser, part) {
                        Some(child) => self.entity(&child.headers, child.body, depth + 1, digest),
                        // Neither headers nor a blank line: all of it is body.
                        None => self.entity(&MessagePart::default(), part, depth + 1, digest),
                    }
                }
                return;
            }
            // No boundary, or none found in the body: read as text, as mail-parser did.
        } else if label.is_forwarded_message() {
            self.forwarded(&label, body, depth);
            return;
        }
        self.leaf(&label, body);
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

    /// A forwarded message: decoded (a body its encoding does not fit is read as
    /// written, often a plain message mislabelled base64) and walked one level
    /// down; read as a leaf when it has no header block.
    fn forwarded(&mut self, label: &Label<'_>, body: &[u8], depth: usize) {
        let message = match transfer::decode(body, label.transfer, usize::MAX) {
            Ok(decoded) => decoded.bytes,
            Err(Damaged) => {
                self.damaged(label, body);
                Cow::Borrowed(body)
            }
        };
        match read_entity(self.parser, &message) {
            Some(inner) => self.entity(&inner.headers, inner.body, depth + 1, false),
            None => {
                if !message.is_empty() {
                    self.found.problem(format!("{} part without a header block read as text", label.content_type));
                }
                self.keep_if_calendar(label, &message, Transfer::Identity, None);
            }
        }
    }

    /// Keeps a part that is a calendar by type, file name or content.
    fn leaf(&mut self, label: &Label<'_>, body: &[u8]) {
        if label.is_tnef() {
            self.found.problem(TNEF_HINT.to_owned());
            return;
        }
        let decoder = label.text_decoder(label.is_text());
        self.keep_if_calendar(label, body, label.transfer, decoder);
    }

    fn keep_if_calendar(&mut self, label: &Label<'_>, body: &[u8], transfer: Transfer, decoder: Option<DecoderFnc>) {
        let (body_transfer, mut decoder) = (transfer, decoder);
        let named = label.names_calendar();
        let calendar = named
            || match sniff(body, body_transfer, decoder) {
                Ok(calendar) => calendar,
                Err(Damaged) => {
                    self.damaged(label, body);
                    decoder = label.text_decoder(true);
                    sniff(body, Transfer::Identity, decoder).unwrap_or(false)
                }
            };
        if !calendar {
            return;
        }
        let bytes = match transfer::decode(body, body_transfer, usize::MAX) {
            Ok(decoded) => decoded.bytes,
            Err(Damaged) => {
                // The damage lies beyond the prefix sniffed: what is kept is the raw
                // text, so that is what must start with a calendar.
                self.damaged(label, body);
                decoder = label.text_decoder(true);
                if !named && !sniff(body, Transfer::Identity, decoder).unwrap_or(false) {
                    return;
                }
                Cow::Borrowed(body)
            }
        };
        let (bytes, charset) = match decoder {
            Some(decode) => (decode(&bytes).into_bytes(), Some("utf-8".to_owned())),
            None => (bytes.into_owned(), label.charset.clone()),
        };
        self.found.keep(CalendarPart {
            bytes,
            content_type: label.content_type.clone(),
            method_param: label.method.clone(),
            charset,
            filename: label.filename.clone(),
        });
    }

    /// A body its transfer encoding does not fit is read as raw text, and said so.
    fn damaged(&mut self, label: &Label<'_>, body: &[u8]) {
        if !body.is_empty() {
            self.found.problem(format!("{} part with damaged encoding read as raw text", label.content_type));
        }
    }
}

/// Whether the body, once decoded (and turned into UTF-8 by `decoder`), starts
/// with a calendar; decodes a growing prefix until the answer is known.
fn sniff(body: &[u8], transfer: Transfer, decoder: Option<DecoderFnc>) -> Result<bool, Damaged> {
    let mut limit = FIRST_SNIFF_BYTES;
    loop {
        let decoded = transfer::decode(body, transfer, limit)?;
        let answer = match decoder {
            Some(decode) => {
                let text = decode(&decoded.bytes);
                let trusted =
                    if decoded.complete { text.len() } else { text.len().saturating_sub(CUT_CHARACTER_BYTES) };
                prefix_starts_with_calendar(text.as_bytes().get(..trusted).unwrap_or_default(), decoded.complete)
            }
            None => prefix_starts_with_calendar(&decoded.bytes, decoded.complete),
        };
        if let Some(answer) = answer {
            return Ok(answer);
        }
        limit = limit.saturating_mul(4);
    }
}
