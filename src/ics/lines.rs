//! Lenient content-line pre-pass (RFC 5545 §3.1): physical lines → unfolded
//! logical lines → `ContentLine`s. Real producers fold with TAB, fold inside
//! parameters, forget the leading space, and misplace quotes; none of that may
//! lose the rest of the calendar.

/// One property: `NAME;P1=v;P2="q":value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ContentLine {
    /// Uppercased property name.
    pub name: String,
    pub params: Vec<Param>,
    /// Raw value, escapes still in place.
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Param {
    /// Uppercased parameter name.
    pub name: String,
    /// Value with quotes removed; several values joined by `,`.
    pub value: String,
}

impl ContentLine {
    /// The first parameter with this (uppercase) name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|p| p.name == name).map(|p| p.value.as_str())
    }

    /// Whether the parameter is present with this value, ignoring case.
    pub fn param_is(&self, name: &str, value: &str) -> bool {
        self.param(name).is_some_and(|v| v.trim().eq_ignore_ascii_case(value))
    }
}

/// Logical lines, and how many physical lines were joined by guesswork.
#[derive(Debug, Default)]
pub(super) struct Unfolded {
    pub lines: Vec<Vec<u8>>,
    /// Continuations that had no leading whitespace (broken folding).
    pub broken_folds: usize,
}

/// Splits on CRLF, LF or bare CR, then unfolds. A continuation starts with one
/// space or TAB (removed), or has no `NAME:`/`NAME;` shape at all (broken
/// folding: joined as is, and counted). Works on bytes so a split UTF-8
/// sequence rejoins.
pub(super) fn unfold(bytes: &[u8]) -> Unfolded {
    let mut out = Unfolded::default();
    let logical = &mut out.lines;
    // Whether the current logical line is quoted-printable, and whether its
    // head (name and parameters, up to the first `:`) is still open: a fold
    // inside the parameters may come before `ENCODING=QUOTED-PRINTABLE`.
    // Only newly appended bytes are looked at, so each byte is scanned once.
    let mut quoted_printable = false;
    let mut head_open = false;
    for line in physical_lines(bytes) {
        match (line.first(), logical.last_mut()) {
            (None, _) => {}
            (Some(b' ' | b'\t'), Some(current)) => {
                let appended = line.get(1..).unwrap_or_default();
                if head_open {
                    // Keep the tail of what came before, so a name cut by the fold is seen whole.
                    let from = current.len().saturating_sub(QP_NAME.len() - 1);
                    current.extend(appended);
                    let window = current.get(from..).unwrap_or_default();
                    quoted_printable |= names_quoted_printable(window);
                    head_open = !appended.contains(&b':');
                } else {
                    current.extend(appended);
                }
            }
            (Some(_), Some(current)) if quoted_printable && current.last() == Some(&b'=') => {
                current.pop();
                current.extend(line);
            }
            (Some(_), Some(current)) if !has_name_shape(line) && !is_delimiter(current) => {
                out.broken_folds += 1;
                current.extend(line);
            }
            (Some(_), _) => {
                quoted_printable = names_quoted_printable(line);
                head_open = !line.contains(&b':');
                logical.push(line.to_vec());
            }
        }
    }
    out
}

fn physical_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    for end in memchr::memchr2_iter(b'\r', b'\n', bytes) {
        if end < start {
            // the LF of a CRLF, taken with its CR
            continue;
        }
        lines.push(bytes.get(start..end).unwrap_or_default());
        let crlf = bytes.get(end) == Some(&b'\r') && bytes.get(end + 1) == Some(&b'\n');
        start = end + 1 + usize::from(crlf);
    }
    if let Some(rest) = bytes.get(start..).filter(|r| !r.is_empty()) {
        lines.push(rest);
    }
    lines
}

/// `NAME:` or `NAME;` at the start, NAME being letters, digits and dashes.
fn has_name_shape(line: &[u8]) -> bool {
    let name_len = line.iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'-').count();
    name_len > 0 && matches!(line.get(name_len), Some(b':' | b';'))
}

/// BEGIN/END lines are never folded by producers; text after them is junk, not
/// a continuation (e.g. a trailer after `END:VCALENDAR`).
fn is_delimiter(line: &[u8]) -> bool {
    let head = line.get(..6).unwrap_or(line).to_ascii_uppercase();
    head.starts_with(b"BEGIN:") || head.starts_with(b"END:")
}

/// vCalendar 1.0 quoted-printable values continue after a trailing `=` with no
/// leading whitespace on the next line; such lines name the encoding in their head.
fn names_quoted_printable(line: &[u8]) -> bool {
    let head_end = line.iter().position(|b| *b == b':').unwrap_or(line.len());
    let head = line.get(..head_end).unwrap_or_default();
    // Most heads have no Q at all: memchr rules them out before the window scan.
    memchr::memchr2(b'Q', b'q', head).is_some() && head.windows(QP_NAME.len()).any(|w| w.eq_ignore_ascii_case(QP_NAME))
}

const QP_NAME: &[u8] = b"QUOTED-PRINTABLE";

/// Parses one unfolded line; `None` when it has no property shape at all.
pub(super) fn parse_content_line(line: &str) -> Option<ContentLine> {
    let name_end = line.find([';', ':'])?;
    let name = line.get(..name_end)?.trim().to_ascii_uppercase();
    // RFC 5545 names are letters, digits and dashes; anything else is not a property.
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    let mut params = Vec::new();
    let mut rest = line.get(name_end..)?;
    loop {
        if let Some(value) = rest.strip_prefix(':') {
            return Some(ContentLine { name, params, value: value.to_string() });
        }
        let after_semicolon = rest.strip_prefix(';')?;
        match parse_param(after_semicolon, &mut params)? {
            Step::More(next) => rest = skip_junk(next)?,
            Step::Value(value) => return Some(ContentLine { name, params, value }),
        }
    }
}

enum Step<'a> {
    /// More parameters or the value follow (text starts at `;` or `:`).
    More(&'a str),
    /// A misplaced quote swallowed the value; this is it.
    Value(String),
}

/// Text after a closing quote that is neither `;` nor `:` is dropped.
fn skip_junk(rest: &str) -> Option<&str> {
    let at = rest.find([';', ':'])?;
    rest.get(at..)
}

fn parse_param<'a>(text: &'a str, params: &mut Vec<Param>) -> Option<Step<'a>> {
    let name_end = text.find(['=', ';', ':'])?;
    let name = text.get(..name_end)?.trim().to_ascii_uppercase();
    let after_name = text.get(name_end..)?;
    let Some(mut rest) = after_name.strip_prefix('=') else {
        // vCalendar 1.0 bare flags such as `;QUOTED-PRINTABLE`.
        params.push(Param { name, value: String::new() });
        return Some(Step::More(after_name));
    };
    let mut values: Vec<&str> = Vec::new();
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let close = quoted.find('"');
            let after = close.and_then(|c| quoted.get(c + 1..)).unwrap_or("");
            if !after.contains(':') {
                return recover_misplaced_quote(name, values, quoted, params);
            }
            values.push(close.and_then(|c| quoted.get(..c)).unwrap_or(""));
            rest = after;
        } else {
            let end = rest.find([',', ';', ':']).unwrap_or(rest.len());
            values.push(rest.get(..end)?);
            rest = rest.get(end..)?;
        }
        match rest.strip_prefix(',') {
            Some(next) => rest = next,
            None => break,
        }
    }
    params.push(Param { name, value: values.join(",") });
    Some(Step::More(rest))
}

/// `TZID="W. Europe Standard Time:20200609T090000"`: the quote runs to the end
/// of the line, so the value hides inside it after the last colon.
fn recover_misplaced_quote<'a>(
    name: String,
    mut values: Vec<&'a str>,
    quoted: &'a str,
    params: &mut Vec<Param>,
) -> Option<Step<'a>> {
    let colon = quoted.rfind(':')?;
    values.push(quoted.get(..colon)?);
    params.push(Param { name, value: values.join(",") });
    let value = quoted.get(colon + 1..)?.trim_end_matches('"');
    Some(Step::Value(value.to_string()))
}

/// Undoes TEXT escapes (`\n`, `\N`, `\,`, `\;`, `\\`); unknown escapes stay as written.
/// Text between escapes is copied in whole runs.
pub(super) fn unescape_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('\\') {
        out.push_str(rest.get(..at).unwrap_or_default());
        let mut chars = rest.get(at + 1..).unwrap_or_default().chars();
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(e @ (',' | ';' | '\\' | ':')) => out.push(e),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
        rest = chars.as_str();
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unfold_str(input: &str) -> Vec<String> {
        unfold(input.as_bytes()).lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect()
    }

    #[test]
    fn physical_lines_end_at_crlf_lf_or_bare_cr() {
        let got = physical_lines(b"a\r\nb\rc\n\nd\r\r\ne");
        assert_eq!(got, [&b"a"[..], b"b", b"c", b"", b"d", b"", b"e"]);
        assert_eq!(physical_lines(b"x\r\n"), [&b"x"[..]]);
        assert!(physical_lines(b"").is_empty());
    }

    #[test]
    fn unfolding() {
        let cases: &[(&str, &[&str])] = &[
            ("A:1\r\nB:2\r\n", &["A:1", "B:2"]),
            ("A:1\nB:2", &["A:1", "B:2"]),
            ("A:1\rB:2\r", &["A:1", "B:2"]),
            ("A:ab\r\n c\r\n", &["A:abc"]),
            ("A:ab\n\tc", &["A:abc"]),
            ("A:a\r\n  b", &["A:a b"]),
            ("A:1\r\n\r\n\r\nB:2", &["A:1", "B:2"]),
            ("UID:0400\n0100AA\nX:1", &["UID:04000100AA", "X:1"]),
            ("ATTENDEE;CN=\"'n\n@x.net'\":MAILTO:n@x.net", &["ATTENDEE;CN=\"'n@x.net'\":MAILTO:n@x.net"]),
            ("ATTENDEE;ROLE=CHAIR\n ;CN=x\n :mailto:a@b", &["ATTENDEE;ROLE=CHAIR;CN=x:mailto:a@b"]),
            ("SUMMARY;ENCODING=QUOTED-PRINTABLE:a=\nb\nX:1", &["SUMMARY;ENCODING=QUOTED-PRINTABLE:ab", "X:1"]),
            ("SUMMARY:a=\nB:1", &["SUMMARY:a=", "B:1"]),
            ("END:VCALENDAR\n--boundary--\n", &["END:VCALENDAR", "--boundary--"]),
            // A fold inside the parameters, before the encoding is named.
            (
                "SUMMARY;CHARSET=ISO-8859-1;\n ENCODING=QUOTED-PRINTABLE:a=\nb\nX:1",
                &["SUMMARY;CHARSET=ISO-8859-1;ENCODING=QUOTED-PRINTABLE:ab", "X:1"],
            ),
            // ... and a fold through the word itself.
            ("SUMMARY;ENCODING=QUOTED-\n PRINTABLE:a=\nb\nX:1", &["SUMMARY;ENCODING=QUOTED-PRINTABLE:ab", "X:1"]),
            // A fold after the colon does not reopen the head.
            ("SUMMARY:x\n ;ENCODING=QUOTED-PRINTABLE a=\nB:1", &["SUMMARY:x;ENCODING=QUOTED-PRINTABLE a=", "B:1"]),
        ];
        for (input, want) in cases {
            assert_eq!(unfold_str(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn unfolding_restores_split_utf8() {
        let bytes = b"SUMMARY:\xC3\r\n \xBCbung";
        let lines = unfold(bytes).lines;
        assert_eq!(lines.first().and_then(|l| std::str::from_utf8(l).ok()), Some("SUMMARY:übung"));
    }

    #[test]
    fn content_lines() {
        /// (line, name, params, value)
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("dtstart:20200101T100000Z", "DTSTART", &[], "20200101T100000Z"),
            ("DTSTART;TZID=Europe/Berlin:20200101T100000", "DTSTART", &[("TZID", "Europe/Berlin")], "20200101T100000"),
            (
                "ORGANIZER;CN=\"Doe, J: x; y\";sent-by=\"mailto:a@b\":mailto:j@d",
                "ORGANIZER",
                &[("CN", "Doe, J: x; y"), ("SENT-BY", "mailto:a@b")],
                "mailto:j@d",
            ),
            (
                "DTSTART;TZID=\"W. Europe Standard Time:20200609T090000\"",
                "DTSTART",
                &[("TZID", "W. Europe Standard Time")],
                "20200609T090000",
            ),
            (
                "DTSTART;TZID=\"Pacific Standard Time:20200609T090000",
                "DTSTART",
                &[("TZID", "Pacific Standard Time")],
                "20200609T090000",
            ),
            ("X;MEMBER=\"a\",\"b\":v", "X", &[("MEMBER", "a,b")], "v"),
            ("X;P=\"a\"junk:v", "X", &[("P", "a")], "v"),
            ("SUMMARY;QUOTED-PRINTABLE:v", "SUMMARY", &[("QUOTED-PRINTABLE", "")], "v"),
            ("ORGANIZER:CN=ORGANIZER:mailto:x@y", "ORGANIZER", &[], "CN=ORGANIZER:mailto:x@y"),
            ("X-EMPTY:", "X-EMPTY", &[], ""),
        ];
        for (input, name, params, value) in cases {
            let line = parse_content_line(input).unwrap_or_else(|| panic!("{input} not parsed"));
            assert_eq!(line.name, *name, "{input}");
            let got: Vec<(&str, &str)> = line.params.iter().map(|p| (p.name.as_str(), p.value.as_str())).collect();
            assert_eq!(got, *params, "{input}");
            assert_eq!(line.value, *value, "{input}");
        }
        for bad in ["no colon here", ":value", "X;P=\"a\"", "", "this is not ; a calendar :: at all", "A B:c"] {
            assert_eq!(parse_content_line(bad), None, "{bad}");
        }
    }

    #[test]
    fn escapes() {
        let cases = [
            (r"a\nb\Nc", "a\nb\nc"),
            (r"x\, y\; z\\w", "x, y; z\\w"),
            (r"lit \\, \xc3", "lit \\, \\xc3"),
            ("trailing\\", "trailing\\"),
        ];
        for (input, want) in cases {
            assert_eq!(unescape_text(input), want);
        }
    }
}
