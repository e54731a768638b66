//! Splitting a multipart body at its boundary (RFC 2046 §5.1.1), and reading
//! the header block of one entity.
//!
//! A delimiter is a line that starts with `--` and the boundary, followed by
//! nothing but spaces or tabs, or by `--` for the closing one. Text before the
//! first delimiter (preamble) and after the closing one (epilogue) is no part;
//! without a closing delimiter the last part runs to the end of the body. The
//! line break before a delimiter belongs to the delimiter, not to the part.

use mail_parser::parsers::MessageStream;
use mail_parser::{MessageParser, MessagePart};
use memchr::memmem;

use super::sniff::starts_with_calendar;

/// The parts of one multipart body, each a header block and a body.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Parts<'b> {
    pub(super) parts: Vec<&'b [u8]>,
    /// Whether the closing delimiter was seen.
    pub(super) closed: bool,
}

/// The parts of `body`, at most `max` of them; `None` when no delimiter line
/// for `boundary` is found (the walk then reads the body as text).
pub(super) fn split<'b>(body: &'b [u8], boundary: &[u8], max: usize) -> Option<Parts<'b>> {
    if boundary.is_empty() {
        return None;
    }
    let mut dashes = Vec::with_capacity(boundary.len() + 2);
    dashes.extend_from_slice(b"--");
    dashes.extend_from_slice(boundary);
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut closed = false;
    for at in memmem::find_iter(body, &dashes) {
        if at > 0 && body.get(at - 1) != Some(&b'\n') {
            continue;
        }
        let after = body.get(at + dashes.len()..).unwrap_or_default();
        let Some(line) = delimiter_line(after) else {
            continue;
        };
        if let Some(start) = current {
            if parts.len() >= max {
                break;
            }
            parts.push(body.get(start..line_break_before(body, at)).unwrap_or_default());
        }
        match line {
            Delimiter::Close => {
                closed = true;
                current = None;
                break;
            }
            Delimiter::Next(length) => current = Some(at + dashes.len() + length),
        }
    }
    if let Some(start) = current {
        if parts.len() < max {
            parts.push(body.get(start..).unwrap_or_default());
        }
    } else if !closed {
        return None;
    }
    Some(Parts { parts, closed })
}

enum Delimiter {
    /// Another part follows; the delimiter line's rest is this many bytes long.
    Next(usize),
    Close,
}

/// What follows `--boundary` on a delimiter line, or `None` when the line is
/// not a delimiter (`--boundary-2` is not one of `boundary`).
fn delimiter_line(after: &[u8]) -> Option<Delimiter> {
    if after.starts_with(b"--") {
        return Some(Delimiter::Close);
    }
    let padding = after.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    match after.get(padding..)? {
        [] => Some(Delimiter::Next(padding)),
        [b'\n', ..] => Some(Delimiter::Next(padding + 1)),
        [b'\r', b'\n', ..] => Some(Delimiter::Next(padding + 2)),
        [b'\r'] => Some(Delimiter::Next(padding + 1)),
        _ => None,
    }
}

/// Where the part before a delimiter at `at` (a line start) ends: before its CRLF or LF.
fn line_break_before(body: &[u8], at: usize) -> usize {
    let without_lf = at.saturating_sub(1);
    if without_lf > 0 && body.get(without_lf - 1) == Some(&b'\r') {
        without_lf - 1
    } else {
        without_lf
    }
}

/// One MIME entity: its headers (parsed by mail-parser) and its body.
pub(super) struct Entity<'b> {
    /// The headers, in a `MessagePart` only to reach mail-parser's `MimeHeaders`.
    pub(super) headers: MessagePart<'b>,
    pub(super) body: &'b [u8],
}

/// Reads the header block at the start of `bytes`. `None` when there is no
/// header and no blank line either: not an entity at all.
///
/// A block that never ends with a blank line is all headers and no body, as
/// mail-parser reads it; an entity that starts right away with a calendar has
/// no headers and is all body (mail-parser would read `BEGIN:VCALENDAR` as a header).
pub(super) fn read_entity<'b>(parser: &MessageParser, bytes: &'b [u8]) -> Option<Entity<'b>> {
    let mut headers = MessagePart::default();
    if starts_with_calendar(bytes) {
        return Some(Entity { headers, body: bytes });
    }
    let mut stream = MessageStream::new(bytes);
    let ended = stream.parse_headers(parser, &mut headers.headers);
    if !ended && headers.headers.is_empty() {
        return None;
    }
    let body = if ended { bytes.get(stream.offset()..).unwrap_or_default() } else { &[] };
    Some(Entity { headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'b>(body: &'b str, boundary: &str) -> Option<(Vec<&'b str>, bool)> {
        let split = split(body.as_bytes(), boundary.as_bytes(), usize::MAX)?;
        let texts = split.parts.iter().map(|p| std::str::from_utf8(p).expect("utf-8")).collect();
        Some((texts, split.closed))
    }

    #[test]
    fn crlf_and_lf_bodies_split_alike() {
        let crlf = "preamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b\r\n\r\ntwo\r\n\r\n--b--\r\nepilogue\r\n";
        assert_eq!(parts(crlf, "b"), Some((vec!["A: 1\r\n\r\none", "\r\ntwo\r\n"], true)));
        let lf = crlf.replace("\r\n", "\n");
        assert_eq!(parts(&lf, "b"), Some((vec!["A: 1\n\none", "\ntwo\n"], true)));
    }

    #[test]
    fn a_boundary_inside_a_line_or_as_a_prefix_is_no_delimiter() {
        let body = "--b\nx --b\n--bx\n--b-2\n--b \t\ny\n--b--";
        assert_eq!(parts(body, "b"), Some((vec!["x --b\n--bx\n--b-2", "y"], true)));
        assert_eq!(parts("text --b\nmore", "b"), None);
        assert_eq!(parts("anything", ""), None);
    }

    #[test]
    fn delimiter_with_trailing_whitespace() {
        let body = "--b  \r\n\r\none\r\n--b\t\r\n\r\ntwo\r\n--b--  \r\n";
        assert_eq!(parts(body, "b"), Some((vec!["\r\none", "\r\ntwo"], true)));
    }

    #[test]
    fn missing_closing_delimiter_runs_to_the_end() {
        assert_eq!(parts("--b\r\n\r\none\r\n--b\r\n\r\nlast\r\n", "b"), Some((vec!["\r\none", "\r\nlast\r\n"], false)));
        assert_eq!(parts("--b", "b"), Some((vec![""], false)));
        assert_eq!(parts("--b--", "b"), Some((vec![], true)));
    }

    #[test]
    fn parts_beyond_the_limit_are_not_collected() {
        let body = "--b\n1\n--b\n2\n--b\n3\n--b--\n";
        let split = split(body.as_bytes(), b"b", 2).expect("delimiters");
        assert_eq!(split.parts, [b"1".as_slice(), b"2"]);
    }

    #[test]
    fn entities_with_and_without_headers() {
        let parser = MessageParser::new();
        let e = read_entity(&parser, b"Content-Type: text/plain\r\n\r\nbody").expect("entity");
        assert_eq!((e.headers.headers.len(), e.body), (1, b"body".as_slice()));
        let e = read_entity(&parser, b"\r\nno headers").expect("entity");
        assert_eq!((e.headers.headers.len(), e.body), (0, b"no headers".as_slice()));
        let e = read_entity(&parser, b"Content-Type: text/plain\r\n").expect("entity");
        assert_eq!((e.headers.headers.len(), e.body), (1, b"".as_slice()));
        let e = read_entity(&parser, b"BEGIN:VCALENDAR\r\nEND:VCALENDAR").expect("entity");
        assert_eq!((e.headers.headers.len(), e.body), (0, b"BEGIN:VCALENDAR\r\nEND:VCALENDAR".as_slice()));
        assert!(read_entity(&parser, b"").is_none());
        assert!(read_entity(&parser, b"  \t ").is_none());
    }
}
