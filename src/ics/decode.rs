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

/// How lines that are not UTF-8 are read: the declared charset when
/// `encoding_rs` knows it (and it is not UTF-8 or UTF-16, which are handled
/// before), else windows-1252, the superset of Latin-1 that producers really
/// write (0x80–0x9F are `€`, `‘`, `’`, …).
pub(super) fn fallback_encoding(declared: Option<&str>) -> &'static encoding_rs::Encoding {
    declared
        .and_then(|label| encoding_rs::Encoding::for_label(label.trim().trim_matches('"').as_bytes()))
        .filter(|e| *e != encoding_rs::UTF_8 && *e != encoding_rs::UTF_16LE && *e != encoding_rs::UTF_16BE)
        .filter(|e| *e != encoding_rs::REPLACEMENT && *e != encoding_rs::X_USER_DEFINED)
        .unwrap_or(encoding_rs::WINDOWS_1252)
}

/// Decodes one logical line. UTF-8 when valid (a mislabelled UTF-8 calendar is
/// far more common than single-byte text that happens to be valid UTF-8);
/// otherwise `fallback`. Returns whether the fallback was needed.
pub(super) fn line_text(bytes: &[u8], fallback: &'static encoding_rs::Encoding) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (fallback.decode_without_bom_handling(bytes).0.into_owned(), true),
    }
}

/// Decodes a vCalendar 1.0 `ENCODING=QUOTED-PRINTABLE` value. Invalid escapes
/// pass through unchanged, as mail clients do.
/// `charset` is the property's vCalendar `CHARSET=` parameter, if any.
pub(super) fn quoted_printable(value: &str, charset: Option<&str>) -> String {
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
    line_text(&out, fallback_encoding(charset)).0
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
        let latin = fallback_encoding(None);
        assert_eq!(line_text(b"Tv\xe5", latin), ("Två".to_string(), true));
        assert_eq!(line_text("Två".as_bytes(), latin), ("Två".to_string(), false));
        assert_eq!(quoted_printable("a=3Db=C3=A9=Re=2", None), "a=bé=Re=2");
        assert_eq!(quoted_printable("Gr=FC=DFe", Some("ISO-8859-1")), "Grüße");
        assert_eq!(quoted_printable("Pr=F3ba", Some("iso-8859-2")), "Próba");
    }

    #[test]
    fn declared_charsets() {
        let cases: &[(Option<&str>, &[u8], &str)] = &[
            // Undeclared: windows-1252, so 0x80-0x9F are the curly quotes and the euro sign.
            (None, b"\x93Hi\x94 \x80 5", "\u{201C}Hi\u{201D} \u{20AC} 5"),
            (Some("windows-1252"), b"caf\xe9 \x96 x", "caf\u{e9} \u{2013} x"),
            (Some("iso-8859-1"), b"caf\xe9", "caf\u{e9}"),
            // Polish: 0xB3 is \u{142} in ISO-8859-2, not \u{b3}.
            (Some("iso-8859-2"), b"Spotkanie w \xb3\xf3dce", "Spotkanie w \u{142}\u{f3}dce"),
            (Some("\"ISO-8859-2\""), b"\xb3", "\u{142}"),
            (Some("windows-1250"), b"\x9a", "\u{161}"),
            (Some("koi8-r"), b"\xf0\xd2\xc9\xd7\xc5\xd4", "\u{41f}\u{440}\u{438}\u{432}\u{435}\u{442}"),
            // UTF-8 wins when the line is valid UTF-8 whatever was declared.
            (Some("iso-8859-2"), "\u{142}\u{f3}d\u{17a}".as_bytes(), "\u{142}\u{f3}d\u{17a}"),
            // Unknown or UTF labels fall back to windows-1252.
            (Some("x-nonsense"), b"\xe9", "\u{e9}"),
            (Some("utf-8"), b"\xe9", "\u{e9}"),
        ];
        for (declared, bytes, want) in cases {
            let got = line_text(bytes, fallback_encoding(*declared)).0;
            assert_eq!(got, *want, "{declared:?}");
        }
    }
}
