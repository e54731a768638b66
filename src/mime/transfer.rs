//! Content-Transfer-Encoding: base64 and quoted-printable bodies back to bytes.
//!
//! Our own decoders, so that a part can be decoded only as far as needed: a
//! bounded prefix to see whether it starts with a calendar, the whole body only
//! for the parts kept. Both are as lenient as mail-parser's: whitespace and line
//! breaks inside base64 are skipped, `=` padding may sit mid-body, invalid
//! quoted-printable escapes pass through. What they cannot read is `Damaged`,
//! and the walk then reads the part as raw text, as mail-parser did.

use std::borrow::Cow;

/// How a part's body is encoded for transport (RFC 2045 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transfer {
    /// 7bit, 8bit, binary, absent or unknown: the bytes are the content.
    Identity,
    Base64,
    QuotedPrintable,
}

impl Transfer {
    /// The encoding a `Content-Transfer-Encoding` value names.
    pub(super) fn named(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("base64") => Self::Base64,
            Some(v) if v.eq_ignore_ascii_case("quoted-printable") => Self::QuotedPrintable,
            _ => Self::Identity,
        }
    }
}

/// The body holds bytes its transfer encoding does not allow (a base64 body
/// with `:` in it, a quoted-printable `==`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Damaged;

/// Decoded bytes, and whether they are the whole body or only a prefix.
#[derive(Debug)]
pub(super) struct Decoded<'b> {
    pub(super) bytes: Cow<'b, [u8]>,
    pub(super) complete: bool,
}

/// Decodes `body`, stopping once at least `limit` bytes are out (`usize::MAX`: all of it).
pub(super) fn decode(body: &[u8], transfer: Transfer, limit: usize) -> Result<Decoded<'_>, Damaged> {
    match transfer {
        Transfer::Identity => {
            let bytes = body.get(..limit).unwrap_or(body);
            Ok(Decoded { complete: bytes.len() == body.len(), bytes: Cow::Borrowed(bytes) })
        }
        Transfer::Base64 => base64(body, limit).map(|(bytes, complete)| Decoded { bytes: Cow::Owned(bytes), complete }),
        Transfer::QuotedPrintable => {
            quoted_printable(body, limit).map(|(bytes, complete)| Decoded { bytes: Cow::Owned(bytes), complete })
        }
    }
}

const INVALID: u8 = 0xFF;

static BASE64_VALUES: [u8; 256] = base64_values();

const fn base64_values() -> [u8; 256] {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
}

/// Base64 with line breaks and other whitespace anywhere; `=` ends a group
/// early wherever it stands, and a final group without padding still counts.
fn base64(body: &[u8], limit: usize) -> Result<(Vec<u8>, bool), Damaged> {
    let mut out = Vec::with_capacity((body.len() / 4 * 3).min(limit.saturating_add(3)));
    let mut group: u32 = 0;
    let mut filled = 0u8;
    let mut rest = body;
    // Whether the rest past `limit` was found to hold no more data (checked once: checking
    // at every byte of a long whitespace tail would be quadratic).
    let mut tail_is_padding = false;
    while let Some((&byte, tail)) = rest.split_first() {
        if out.len() >= limit && !tail_is_padding {
            if rest.iter().any(|b| !b.is_ascii_whitespace() && *b != b'=') {
                return Ok((out, false));
            }
            tail_is_padding = true;
        }
        if filled == 0 {
            // Fast path: the whole groups of a run of alphabet characters (a line).
            let run = rest.iter().position(|&b| BASE64_VALUES[usize::from(b)] >= 64).unwrap_or(rest.len());
            let wanted = limit.saturating_sub(out.len()).div_ceil(3).saturating_mul(4);
            let whole = (run / 4 * 4).min(wanted);
            if whole > 0 {
                let (groups, after) = rest.split_at(whole);
                let start = out.len();
                out.resize(start + whole / 4 * 3, 0);
                let decoded = out.get_mut(start..).unwrap_or_default();
                for (bytes, chars) in decoded.chunks_exact_mut(3).zip(groups.chunks_exact(4)) {
                    let word = chars.iter().fold(0u32, |word, &c| word << 6 | u32::from(BASE64_VALUES[usize::from(c)]));
                    bytes.copy_from_slice(&word.to_be_bytes()[1..]);
                }
                rest = after;
                continue;
            }
        }
        rest = tail;
        let value = BASE64_VALUES[usize::from(byte)];
        if value < 64 {
            group = group << 6 | u32::from(value);
            filled += 1;
            if filled == 4 {
                out.extend_from_slice(&group.to_be_bytes()[1..]);
                (group, filled) = (0, 0);
            }
        } else if byte == b'=' {
            flush_base64(&mut out, group, filled);
            (group, filled) = (0, 0);
        } else if !matches!(byte, b' ' | b'\t' | b'\r' | b'\n') {
            return Err(Damaged);
        }
    }
    flush_base64(&mut out, group, filled);
    Ok((out, true))
}

/// The bytes of a group cut short after `filled` characters (2 → 1 byte, 3 → 2).
fn flush_base64(out: &mut Vec<u8>, group: u32, filled: u8) {
    match filled {
        2 => out.push((group >> 4) as u8),
        3 => out.extend_from_slice(&[(group >> 10) as u8, (group >> 2) as u8]),
        _ => {}
    }
}

/// Quoted-printable as mail-parser reads it: `=XX` escapes, `=` line end as a soft
/// break, trailing whitespace dropped, line ends written as CRLF once the body has
/// shown a CR (else LF); `=` followed by anything else passes through as written.
/// `=` right after `=` or `=X` is damage.
fn quoted_printable(body: &[u8], limit: usize) -> Result<(Vec<u8>, bool), Damaged> {
    enum State {
        Text,
        Equals,
        FirstHex(u8),
    }
    let mut out = Vec::with_capacity(body.len().min(limit.saturating_add(3)));
    let mut state = State::Text;
    let mut trailing_space = 0;
    let mut line_end: &[u8] = b"\n";
    let mut i = 0;
    while let Some(&byte) = body.get(i) {
        if out.len() >= limit {
            return Ok((out, false));
        }
        i += 1;
        match (byte, &state) {
            (b'=', State::Text) => state = State::Equals,
            (b'=', _) => return Err(Damaged),
            (b'\n', State::Equals) => {
                state = State::Text;
                trailing_space = 0;
            }
            (b'\n', _) => {
                out.truncate(out.len().saturating_sub(trailing_space));
                out.extend_from_slice(line_end);
                state = State::Text;
                trailing_space = 0;
            }
            (b'\r', _) => line_end = b"\r\n",
            (_, State::Text) => {
                // Copy the run of plain bytes up to the next byte that means something.
                let run_end = body
                    .get(i..)
                    .unwrap_or_default()
                    .iter()
                    .position(|b| matches!(b, b'=' | b'\n' | b'\r'))
                    .map_or(body.len(), |p| i + p);
                let run = body.get(i - 1..run_end).unwrap_or_default();
                out.extend_from_slice(run);
                let spaces = run.iter().rev().take_while(|b| b.is_ascii_whitespace()).count();
                trailing_space = if spaces == run.len() { trailing_space + spaces } else { spaces };
                i = run_end;
            }
            (_, State::Equals) => match hex_value(byte) {
                Some(high) => state = State::FirstHex(high),
                None if byte.is_ascii_whitespace() => {}
                None => {
                    out.extend_from_slice(&[b'=', byte]);
                    state = State::Text;
                    trailing_space = 0;
                }
            },
            (_, &State::FirstHex(high)) => {
                match hex_value(byte) {
                    Some(low) => out.push(high << 4 | low),
                    None => out.extend_from_slice(&[b'=', body.get(i - 2).copied().unwrap_or(b'='), byte]),
                }
                state = State::Text;
                trailing_space = 0;
            }
        }
    }
    Ok((out, true))
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(body: &[u8], transfer: Transfer) -> Result<Vec<u8>, Damaged> {
        decode(body, transfer, usize::MAX).map(|d| {
            assert!(d.complete);
            d.bytes.into_owned()
        })
    }

    #[test]
    fn base64_with_line_breaks_padding_and_damage() {
        assert_eq!(all(b"QUJD\r\nREVG\r\nRw==\r\n", Transfer::Base64), Ok(b"ABCDEFG".to_vec()));
        assert_eq!(all(b"  QU JD\tRE\nVGRw", Transfer::Base64), Ok(b"ABCDEFG".to_vec()), "no padding");
        assert_eq!(all(b"QQ==QkM=", Transfer::Base64), Ok(b"ABC".to_vec()), "padding mid-body");
        assert_eq!(all(b"", Transfer::Base64), Ok(Vec::new()));
        assert_eq!(all(b"QUJD\nFrom: x", Transfer::Base64), Err(Damaged));
        assert_eq!(all(b"QUJD-", Transfer::Base64), Err(Damaged));
    }

    #[test]
    fn base64_prefix_stops_early() {
        let body = b"QUJD\r\nREVG\r\nR0hJ\r\nSktM\r\n";
        let prefix = decode(body, Transfer::Base64, 4).unwrap();
        assert!(!prefix.complete);
        assert!(prefix.bytes.starts_with(b"ABCD") && prefix.bytes.len() < 12, "{:?}", prefix.bytes);
        let whole = decode(body, Transfer::Base64, 12).unwrap();
        assert_eq!((&*whole.bytes, whole.complete), (&b"ABCDEFGHIJKL"[..], true));
    }

    #[test]
    fn base64_prefix_with_a_long_blank_tail_is_read_once() {
        // 86 groups (258 bytes, past the 256 asked for), then a megabyte of blanks: a tail
        // scanned again at each of its bytes would take hours.
        let mut body = b"QUJD".repeat(86);
        body.extend(std::iter::repeat_n(b' ', 1 << 20));
        body.extend_from_slice(b"\r\n==\r\n");
        let prefix = decode(&body, Transfer::Base64, 256).unwrap();
        assert_eq!((prefix.bytes.len(), prefix.complete), (258, true));
        assert!(prefix.bytes.chunks(3).all(|c| c == b"ABC"));
    }

    #[test]
    fn quoted_printable_as_mail_clients_write_it() {
        let qp = Transfer::QuotedPrintable;
        assert_eq!(all(b"R=E9union=0D=0Ax=3Dy", qp), Ok(b"R\xe9union\r\nx=y".to_vec()));
        assert_eq!(all(b"soft=\r\nbreak\r\nnext  \r\nend", qp), Ok(b"softbreak\r\nnext\r\nend".to_vec()));
        assert_eq!(all(b"lf only=\nsoft\nline \t\n", qp), Ok(b"lf onlysoft\nline\n".to_vec()));
        assert_eq!(all(b"=Re =ot =4x", qp), Ok(b"=Re =ot =4x".to_vec()), "invalid escapes pass through");
        assert_eq!(all(b"trailing = \r\nsoft", qp), Ok(b"trailing soft".to_vec()));
        assert_eq!(all(b"a==3D", qp), Err(Damaged));
        assert_eq!(all(b"a=4=", qp), Err(Damaged));
    }

    #[test]
    fn identity_prefix_borrows() {
        let d = decode(b"abcdef", Transfer::Identity, 3).unwrap();
        assert!(matches!(d.bytes, Cow::Borrowed(b"abc")) && !d.complete);
        assert!(decode(b"abc", Transfer::Identity, 3).unwrap().complete);
    }

    #[test]
    fn transfer_names() {
        assert_eq!(Transfer::named(Some(" Base64 ")), Transfer::Base64);
        assert_eq!(Transfer::named(Some("QUOTED-PRINTABLE")), Transfer::QuotedPrintable);
        assert_eq!(Transfer::named(Some("8bit")), Transfer::Identity);
        assert_eq!(Transfer::named(None), Transfer::Identity);
    }
}
