//! Recognising calendar text by its bytes, whatever the MIME labels say.
//!
//! Senders label invites badly (octet-stream, text/plain, no label at all) and some
//! write them in UTF-16, so the walk dispatches on content as well as on names.

use std::borrow::Cow;

use mail_parser::parsers::MessageStream;

const BEGIN: &[u8] = b"BEGIN:VCALENDAR";
const END: &[u8] = b"END:VCALENDAR";
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Drops leading lines that hold only whitespace.
///
/// mail-parser's header parser reads a first blank line as the end of an empty
/// header block, so a mail that starts with a line of spaces (seen from iCloud)
/// would lose its headers and its whole MIME structure.
pub(super) fn skip_blank_lines(raw: &[u8]) -> &[u8] {
    let blank = raw.iter().take_while(|b| b.is_ascii_whitespace()).count();
    match raw[..blank].iter().rposition(|&b| b == b'\n') {
        Some(newline) => &raw[newline + 1..],
        None => raw,
    }
}

/// Characters (UTF-16 code units, or bytes) looked at for `BEGIN:VCALENDAR`.
const HEAD_CHARS: usize = 1024;

/// Whether the bytes start (after a BOM and up to 1 KiB of whitespace) with `BEGIN:VCALENDAR`,
/// in UTF-8/ASCII or in UTF-16 of either byte order, with or without BOM.
pub(super) fn starts_with_calendar(bytes: &[u8]) -> bool {
    prefix_starts_with_calendar(bytes, true).unwrap_or(false)
}

/// [`starts_with_calendar`] of a text of which only the first bytes are known
/// (all of them when `complete`): `None` when the answer depends on what follows,
/// so that a part need only be decoded as far as its first characters.
pub(super) fn prefix_starts_with_calendar(prefix: &[u8], complete: bool) -> Option<bool> {
    if !complete && prefix.len() < 4 {
        // the BOM and the UTF-16 guess need the first bytes
        return None;
    }
    // The text as single bytes: UTF-16 code units are narrowed to their low byte,
    // so ASCII keywords can be compared in any encoding.
    let (body, width, low) = match utf16_order(prefix) {
        Some((body, little_endian)) => (body, 2, usize::from(!little_endian)),
        None => (prefix.strip_prefix(UTF8_BOM).unwrap_or(prefix), 1, 0),
    };
    let chars = (body.len() / width).min(HEAD_CHARS);
    let char_at = |i: usize| body.get(i * width + low).copied().unwrap_or_default();
    let start = (0..chars).find(|&i| !char_at(i).is_ascii_whitespace()).unwrap_or(chars);
    for (offset, expected) in BEGIN.iter().enumerate() {
        if start + offset >= chars {
            // the head ran out: the answer is known only when it is the whole head
            return (complete || chars == HEAD_CHARS).then_some(false);
        }
        if !char_at(start + offset).eq_ignore_ascii_case(expected) {
            return Some(false);
        }
    }
    Some(true)
}

/// The UTF-16 body (after any BOM) and whether it is little-endian, or `None`
/// when the bytes do not look like UTF-16.
fn utf16_order(bytes: &[u8]) -> Option<(&[u8], bool)> {
    match bytes {
        [0xFF, 0xFE, rest @ ..] => Some((rest, true)),
        [0xFE, 0xFF, rest @ ..] => Some((rest, false)),
        [first, 0, ..] if *first != 0 => Some((bytes, true)),
        [0, second, ..] if *second != 0 => Some((bytes, false)),
        _ => None,
    }
}

/// Every `BEGIN:VCALENDAR` … `END:VCALENDAR` span of plain text in `raw`.
///
/// The last resort when the MIME structure hid the calendar (a part under a
/// boundary that was never declared): the text is still in the mail. A span
/// that still carries quoted-printable escapes is decoded first.
pub(super) fn calendar_spans(raw: &[u8]) -> Vec<Cow<'_, [u8]>> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(start) = find_ignore_case(&raw[from..], BEGIN).map(|i| from + i) {
        let Some(end) = find_ignore_case(&raw[start..], END).map(|i| start + i + END.len()) else {
            break;
        };
        spans.push(decode_if_quoted_printable(&raw[start..end]));
        from = end;
    }
    spans
}

fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle))
}

/// Decodes a span that shows quoted-printable marks (`=0D=0A`, `=3D`, soft line
/// breaks); an iCalendar text has none of them on its own.
fn decode_if_quoted_printable(span: &[u8]) -> Cow<'_, [u8]> {
    let soft_break = span.windows(2).any(|w| w == b"=\n") || span.windows(3).any(|w| w == b"=\r\n");
    let escaped = find_ignore_case(span, b"=0D=0A").is_some() || find_ignore_case(span, b"=3D").is_some();
    if soft_break || escaped {
        MessageStream::new(span).decode_quoted_printable_mime(b"").1.into_owned().into()
    } else {
        Cow::Borrowed(span)
    }
}

/// How many times `message/rfc822` or `message/global` appears (any case): an
/// upper bound on the forwarded-message parts the walk would read.
/// Only the slashes are visited (memchr), so this costs little next to parsing.
pub(super) fn count_forwarded_parts(raw: &[u8]) -> usize {
    const TYPE: &[u8] = b"message";
    const SUBTYPES: [&[u8]; 2] = [b"rfc822", b"global"];
    let matches_at = |slash: usize| {
        let before = slash.checked_sub(TYPE.len()).and_then(|start| raw.get(start..slash));
        let after = raw.get(slash + 1..).unwrap_or_default();
        before.is_some_and(|t| t.eq_ignore_ascii_case(TYPE))
            && SUBTYPES.iter().any(|s| after.get(..s.len()).is_some_and(|a| a.eq_ignore_ascii_case(s)))
    };
    memchr::memchr_iter(b'/', raw).filter(|&slash| matches_at(slash)).count()
}

/// Whether two texts are equal once CRLF and CR are read as LF and outer
/// whitespace is trimmed: two copies of one invite (inline part and
/// attachment) differ only in that. Compared as it goes, without copies.
pub(super) fn same_text(a: &[u8], b: &[u8]) -> bool {
    line_ends_as_lf(a.trim_ascii()).eq(line_ends_as_lf(b.trim_ascii()))
}

fn line_ends_as_lf(bytes: &[u8]) -> impl Iterator<Item = u8> + '_ {
    bytes.iter().enumerate().filter(|&(i, &b)| !(b == b'\r' && bytes.get(i + 1) == Some(&b'\n'))).map(|(_, &b)| {
        if b == b'\r' {
            b'\n'
        } else {
            b
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_calendar_starts() {
        assert!(starts_with_calendar(b"BEGIN:VCALENDAR\r\n"));
        assert!(starts_with_calendar(b"\xEF\xBB\xBF \r\nbegin:vcalendar\n"));
        assert!(starts_with_calendar(b"\xFF\xFEB\0E\0G\0I\0N\0:\0V\0C\0A\0L\0E\0N\0D\0A\0R\0"));
        assert!(starts_with_calendar(b"B\0E\0G\0I\0N\0:\0V\0C\0A\0L\0E\0N\0D\0A\0R\0\r\0\n\0"));
        assert!(starts_with_calendar(b"\0B\0E\0G\0I\0N\0:\0V\0C\0A\0L\0E\0N\0D\0A\0R"));
        assert!(!starts_with_calendar(b"Hello BEGIN:VCALENDAR"));
        assert!(!starts_with_calendar(b""));
        assert!(!starts_with_calendar(b"BEGIN:VCAL"));
        let late = format!("{}BEGIN:VCALENDAR", " ".repeat(1010));
        assert!(!starts_with_calendar(late.as_bytes()), "beyond the first 1024 characters");
        assert!(starts_with_calendar(late.get(1..).unwrap_or_default().as_bytes()));
    }

    #[test]
    fn prefixes_answer_only_when_what_follows_cannot_change_it() {
        assert_eq!(prefix_starts_with_calendar(b"BEG", false), None);
        assert_eq!(prefix_starts_with_calendar(b"BEG", true), Some(false));
        assert_eq!(prefix_starts_with_calendar(b"\r\n  BEGIN:VCA", false), None);
        assert_eq!(prefix_starts_with_calendar(b"\r\n  BEGIN:VCALENDAR", false), Some(true));
        assert_eq!(prefix_starts_with_calendar(b"\r\n  Dear all", false), Some(false));
        assert_eq!(prefix_starts_with_calendar(b"B\0E\0G\0", false), None);
        assert_eq!(prefix_starts_with_calendar(b"B\0X\0G\0", false), Some(false));
        assert_eq!(prefix_starts_with_calendar(" ".repeat(1100).as_bytes(), false), Some(false));
        assert_eq!(prefix_starts_with_calendar(" ".repeat(1000).as_bytes(), false), None);
    }

    #[test]
    fn skips_only_whole_blank_lines() {
        assert_eq!(skip_blank_lines(b"   \r\n\nFrom: a"), b"From: a");
        assert_eq!(skip_blank_lines(b"  From: a"), b"  From: a");
        assert_eq!(skip_blank_lines(b""), b"");
    }

    #[test]
    fn finds_spans_and_decodes_quoted_printable() {
        let raw = b"x BEGIN:VCALENDAR\nA\nEND:VCALENDAR y begin:vcalendar=0D=0AB=0D=0Aend:vcalendar";
        let spans = calendar_spans(raw);
        assert_eq!(spans.len(), 2);
        assert_eq!(&*spans[0], b"BEGIN:VCALENDAR\nA\nEND:VCALENDAR");
        assert_eq!(&*spans[1], b"begin:vcalendar\r\nB\r\nend:vcalendar");
        assert!(calendar_spans(b"BEGIN:VCALENDAR no end").is_empty());
    }

    #[test]
    fn counts_forwarded_parts() {
        assert_eq!(count_forwarded_parts(b"Content-Type: Message/RFC822\nmessage/global message/partial /rfc822"), 2);
        assert_eq!(count_forwarded_parts(b"/"), 0);
    }

    #[test]
    fn compares_texts_across_line_ends_and_outer_whitespace() {
        assert!(same_text(b"\r\nA\r\nB\rC\n \n", b"A\nB\nC"));
        assert!(same_text(b"A\r\n", b" A"));
        assert!(!same_text(b"A\r\nB", b"A\n\nB"));
        assert!(!same_text(b"A B", b"AB"));
        assert!(!same_text(b"A", b"A\nB"));
        assert!(same_text(b" \r\n", b""));
    }
}
