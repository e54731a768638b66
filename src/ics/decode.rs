//! Bytes → text. Calendars arrive as UTF-8, UTF-16 (with or without BOM) or a
//! single-byte charset nobody declared, so the encoding is sniffed, not trusted.

/// Turns the part's bytes into UTF-8-or-single-byte bytes: strips a UTF-8 BOM and
/// transcodes UTF-16. Lines are unfolded on these bytes, so a UTF-8 character
/// split across a fold comes back whole (rule 12).
pub(super) fn normalise_encoding(bytes: &[u8], problems: &mut Vec<String>) -> Vec<u8> {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return rest.to_vec();
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16_to_utf8(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16_to_utf8(rest, u16::from_be_bytes);
    }
    match sniff_utf16(bytes) {
        Some(Utf16::Le) => {
            problems.push("calendar is UTF-16LE without BOM; transcoded".to_string());
            utf16_to_utf8(bytes, u16::from_le_bytes)
        }
        Some(Utf16::Be) => {
            problems.push("calendar is UTF-16BE without BOM; transcoded".to_string());
            utf16_to_utf8(bytes, u16::from_be_bytes)
        }
        None => bytes.to_vec(),
    }
}

enum Utf16 {
    Le,
    Be,
}

/// ASCII text in UTF-16 has a NUL in every other byte; real UTF-8 calendars have none.
fn sniff_utf16(bytes: &[u8]) -> Option<Utf16> {
    let head = bytes.get(..bytes.len().min(512)).unwrap_or(bytes);
    let pairs = head.len() / 2;
    if pairs < 4 {
        return None;
    }
    let even = head.iter().step_by(2).filter(|b| **b == 0).count();
    let odd = head.iter().skip(1).step_by(2).filter(|b| **b == 0).count();
    if odd * 10 >= pairs * 6 && even * 10 <= pairs {
        Some(Utf16::Le)
    } else if even * 10 >= pairs * 6 && odd * 10 <= pairs {
        Some(Utf16::Be)
    } else {
        None
    }
}

fn utf16_to_utf8(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Vec<u8> {
    let units = bytes.chunks_exact(2).map(|c| unit([c[0], c[1]]));
    let text: String = char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .filter(|c| *c != '\u{FEFF}')
        .collect();
    text.into_bytes()
}

/// Decodes one logical line. UTF-8 when valid; otherwise the declared
/// single-byte charset, which in practice is Latin-1 or windows-1252 (read as
/// Latin-1). Returns whether it had to guess.
pub(super) fn line_text(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (latin1(bytes), true),
    }
}

pub(super) fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|b| char::from(*b)).collect()
}

/// Decodes a vCalendar 1.0 `ENCODING=QUOTED-PRINTABLE` value. Invalid escapes
/// pass through unchanged, as mail clients do.
pub(super) fn quoted_printable(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes.get(i + 1..i + 3).and_then(hex_byte);
        match (b, hex) {
            (b'=', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    line_text(&out).0
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(pair).ok()?;
    u8::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        let utf16le: Vec<u8> = "BEGIN:VCALENDAR\r\nÜ".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let utf16be: Vec<u8> = "BEGIN:VCALENDAR\r\n".encode_utf16().flat_map(u16::to_be_bytes).collect();
        let mut with_bom = vec![0xFF, 0xFE];
        with_bom.extend(&utf16le);
        let cases: &[(&[u8], &str, usize)] = &[
            (b"\xEF\xBB\xBFBEGIN:X", "BEGIN:X", 0),
            (&utf16le, "BEGIN:VCALENDAR\r\nÜ", 1),
            (&utf16be, "BEGIN:VCALENDAR\r\n", 1),
            (&with_bom, "BEGIN:VCALENDAR\r\nÜ", 0),
            (b"BEGIN:X", "BEGIN:X", 0),
        ];
        for (input, want, nproblems) in cases {
            let mut problems = Vec::new();
            let got = normalise_encoding(input, &mut problems);
            assert_eq!(String::from_utf8_lossy(&got), *want);
            assert_eq!(problems.len(), *nproblems);
        }
    }

    #[test]
    fn text_and_qp() {
        assert_eq!(line_text(b"Tv\xe5"), ("Två".to_string(), true));
        assert_eq!(line_text("Två".as_bytes()), ("Två".to_string(), false));
        assert_eq!(quoted_printable("a=3Db=C3=A9=Re=2"), "a=bé=Re=2");
    }
}
