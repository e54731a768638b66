//! Synthetic mails for each shape an invite arrives in, the public corpus, and
//! a deterministic mutation run that must never panic.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{extract, MimeLimits};
use crate::model::Extracted;

const ICS: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n\
UID:u1@example.org\r\nDTSTART:20251210T150000Z\r\nSUMMARY:Sync\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

fn run(mail: &str) -> Extracted {
    extract(mail.as_bytes(), &MimeLimits::default())
}

/// Minimal RFC 4648 base64 with 76-character lines, so tests need no crate.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            let c = if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' };
            out.push(c);
        }
    }
    let lines: Vec<String> = out.as_bytes().chunks(76).map(|l| String::from_utf8_lossy(l).into_owned()).collect();
    lines.join("\r\n")
}

/// A mail with the given extra headers and one multipart body of `parts`.
fn multipart(subtype: &str, boundary: &str, headers: &str, parts: &[String]) -> String {
    let mut mail =
        format!("{headers}MIME-Version: 1.0\r\nContent-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n\r\n");
    for part in parts {
        mail.push_str(&format!("--{boundary}\r\n{part}\r\n"));
    }
    mail.push_str(&format!("--{boundary}--\r\n"));
    mail
}

fn part(content_type: &str, extra: &str, body: &str) -> String {
    format!("Content-Type: {content_type}\r\n{extra}\r\n{body}")
}

fn calendar_part() -> String {
    part("text/calendar; charset=utf-8; method=request", "", ICS)
}

fn base64_calendar_attachment(ics: &str) -> String {
    part(
        "application/ics; name=\"invite.ics\"",
        "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"invite.ics\"\r\n",
        &base64(ics.as_bytes()),
    )
}

const HEADERS: &str = "From: Alice <Alice@Example.org>\r\nTo: assistant@example.com\r\nSubject: Sync\r\n";

#[test]
fn text_calendar_in_multipart_alternative() {
    let parts = [part("text/plain", "", "Join us"), part("text/html", "", "<p>Join</p>"), calendar_part()];
    let got = run(&multipart("alternative", "alt", HEADERS, &parts));
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    let cal = &got.calendars[0];
    assert_eq!(cal.content_type, "text/calendar");
    assert_eq!(cal.method_param.as_deref(), Some("REQUEST"));
    assert_eq!(cal.charset.as_deref(), Some("utf-8"));
    assert_eq!(cal.bytes, ICS.as_bytes());
    assert_eq!(got.from.as_deref(), Some("alice@example.org"));
}

#[test]
fn forwarded_message_with_base64_calendar_two_levels_down() {
    let b64 = part("text/calendar; method=REQUEST", "Content-Transfer-Encoding: base64\r\n", &base64(ICS.as_bytes()));
    let alternative = multipart("alternative", "inner-alt", "", &[part("text/plain", "", "invite"), b64]);
    let inner = multipart("mixed", "inner-mix", "From: bob@example.net\r\nSubject: Invite\r\n", &[alternative]);
    let outer = multipart(
        "mixed",
        "outer",
        "From: carol@example.com\r\nSubject: Fwd: Invite\r\n",
        &[part("text/plain", "", "FYI"), part("message/rfc822", "", &inner)],
    );
    let got = run(&outer);
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].bytes, ICS.as_bytes());
    assert_eq!(got.calendars[0].method_param.as_deref(), Some("REQUEST"));
    assert_eq!(got.from.as_deref(), Some("carol@example.com"), "header facts are the outer message's");
}

#[test]
fn base64_encoded_forwarded_message() {
    let inner = multipart("mixed", "in", "From: bob@example.net\r\n", &[calendar_part()]);
    let rfc822 = part("message/rfc822", "Content-Transfer-Encoding: base64\r\n", &base64(inner.as_bytes()));
    let got = run(&multipart("mixed", "out", HEADERS, &[rfc822]));
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].method_param.as_deref(), Some("REQUEST"));
}

#[test]
fn forwarded_messages_base64_encoded_beyond_parser_nesting() {
    let mut mail = multipart("mixed", "b0", "From: x@example.net\r\n", &[calendar_part()]);
    for level in 1..=5 {
        let rfc822 = part("message/rfc822", "Content-Transfer-Encoding: base64\r\n", &base64(mail.as_bytes()));
        mail = multipart("mixed", &format!("b{level}"), "From: x@example.net\r\n", &[rfc822]);
    }
    let got = run(&mail);
    assert_eq!(got.calendars.len(), 1, "{got:?}");
}

#[test]
fn application_ics_only() {
    let mail = format!("{HEADERS}Content-Type: application/ics; name=invite.ics\r\n\r\n{ICS}");
    let got = run(&mail);
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].content_type, "application/ics");
    assert_eq!(got.calendars[0].filename.as_deref(), Some("invite.ics"));
}

#[test]
fn ics_as_octet_stream_by_name_or_by_content() {
    let named = part(
        "application/octet-stream; name=\"Meeting.ICS\"",
        "Content-Transfer-Encoding: base64\r\n",
        &base64(ICS.as_bytes()),
    );
    let unnamed = part(
        "application/octet-stream",
        "Content-Transfer-Encoding: base64\r\n",
        &base64(ICS.replace("u1@", "u2@").as_bytes()),
    );
    let got = run(&multipart("mixed", "m", HEADERS, &[named, unnamed]));
    assert_eq!(got.calendars.len(), 2, "{got:?}");
    assert_eq!(got.calendars[0].filename.as_deref(), Some("Meeting.ICS"));
    assert_eq!(got.calendars[1].bytes, ICS.replace("u1@", "u2@").as_bytes());
}

#[test]
fn the_same_calendar_as_part_and_attachment_counts_once() {
    let lf_copy = ICS.replace("\r\n", "\n");
    let parts = [calendar_part(), base64_calendar_attachment(&lf_copy)];
    let got = run(&multipart("mixed", "m", HEADERS, &parts));
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].content_type, "text/calendar", "the first copy is kept");
}

#[test]
fn copies_that_differ_are_both_kept() {
    let without_method = ICS.replace("METHOD:REQUEST\r\n", "");
    let parts = [calendar_part(), base64_calendar_attachment(&without_method)];
    let got = run(&multipart("mixed", "m", HEADERS, &parts));
    assert_eq!(got.calendars.len(), 2, "{got:?}");
}

#[test]
fn mixed_case_content_type() {
    let mail = format!("{HEADERS}Content-Type: TeXt/CaLeNdAr; Method=Request\r\n\r\n{ICS}");
    let got = run(&mail);
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].content_type, "text/calendar");
    assert_eq!(got.calendars[0].method_param.as_deref(), Some("REQUEST"));
}

#[test]
fn bare_calendar_input_is_one_part_without_header_facts() {
    let input = format!("\u{feff}\r\n{ICS}");
    let got = run(&input);
    assert_eq!(got.calendars.len(), 1);
    assert_eq!(got.calendars[0].bytes, input.as_bytes());
    assert_eq!(got.calendars[0].content_type, "text/calendar");
    assert_eq!((got.from, got.subject, got.message_id), (None, None, None));

    let utf16: Vec<u8> = [0xFF, 0xFE].into_iter().chain(ICS.encode_utf16().flat_map(u16::to_le_bytes)).collect();
    let got = extract(&utf16, &MimeLimits::default());
    assert_eq!(got.calendars.len(), 1);
    assert_eq!(got.calendars[0].bytes, utf16);
}

#[test]
fn utf16_calendar_part_keeps_its_bytes() {
    let utf16: Vec<u8> = ICS.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let attachment = part("application/octet-stream", "Content-Transfer-Encoding: base64\r\n", &base64(&utf16));
    let got = run(&multipart("mixed", "m", HEADERS, &[attachment]));
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].bytes, utf16);
}

#[test]
fn undeclared_latin1_calendar_keeps_its_bytes() {
    let latin1: Vec<u8> = ICS.replace("Sync", "R\u{e9}union").chars().map(|c| c as u8).collect();
    let mut mail =
        format!("{HEADERS}Content-Type: text/calendar\r\nContent-Transfer-Encoding: 8bit\r\n\r\n").into_bytes();
    mail.extend_from_slice(&latin1);
    let got = extract(&mail, &MimeLimits::default());
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].bytes, latin1);
    assert_eq!(got.calendars[0].charset, None);
}

#[test]
fn declared_charset_is_decoded_to_utf8() {
    let qp = ICS.replace("Sync", "R=E9union");
    let mail = format!(
        "{HEADERS}Content-Type: text/calendar; charset=ISO-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{qp}"
    );
    let got = run(&mail);
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].charset.as_deref(), Some("utf-8"));
    assert!(String::from_utf8_lossy(&got.calendars[0].bytes).contains("SUMMARY:Réunion"));
}

#[test]
fn no_calendar_gives_no_calendars() {
    let got = run(&multipart(
        "alternative",
        "a",
        HEADERS,
        &[part("text/plain", "", "hello"), part("text/html", "", "<b>hi</b>")],
    ));
    assert!(got.calendars.is_empty(), "{got:?}");
    assert!(run("").calendars.is_empty());
}

#[test]
fn nesting_beyond_max_depth_is_a_problem_not_a_panic() {
    // base64, so that the raw-text fallback cannot see the calendar either
    let mut mail = base64_calendar_attachment(ICS);
    for level in 0..40 {
        mail = multipart("mixed", &format!("d{level}"), "", &[mail]);
    }
    let got = run(&format!("{HEADERS}{mail}"));
    assert!(got.calendars.is_empty(), "{got:?}");
    assert!(got.problems.iter().any(|p| p.contains("deeper than 16")), "{:?}", got.problems);
}

fn nested_forwards(depth: usize) -> String {
    let mut mail = String::from(HEADERS);
    for _ in 0..depth {
        mail.push_str("Content-Type: message/rfc822\r\n\r\nFrom: x@example.net\r\n");
    }
    mail.push_str("Content-Type: text/plain\r\n\r\nbottom\r\n");
    mail
}

#[test]
fn forwards_nested_beyond_max_depth_are_a_problem() {
    let got = run(&nested_forwards(40));
    assert!(got.problems.iter().any(|p| p.contains("deeper than 16")), "{:?}", got.problems);
}

#[test]
fn a_hundred_thousand_nested_forwards_do_not_overflow_the_stack() {
    let got = run(&nested_forwards(100_000));
    assert_eq!(got.from.as_deref(), Some("alice@example.org"));
    assert!(got.problems.iter().any(|p| p.contains("only the top headers read")), "{:?}", got.problems);
}

#[test]
fn too_many_parts_is_a_problem() {
    let parts: Vec<String> = (0..20).map(|i| part("text/plain", "", &format!("part {i}"))).collect();
    let limits = MimeLimits { max_parts: 5, ..MimeLimits::default() };
    let got = extract(multipart("mixed", "m", HEADERS, &parts).as_bytes(), &limits);
    assert!(got.problems.iter().any(|p| p.contains("more than 5 MIME parts")), "{:?}", got.problems);
}

#[test]
fn oversized_calendar_is_skipped_with_a_problem() {
    let limits = MimeLimits { max_calendar_bytes: 50, ..MimeLimits::default() };
    let got = extract(multipart("mixed", "m", HEADERS, &[calendar_part()]).as_bytes(), &limits);
    assert!(got.calendars.is_empty());
    assert!(got.problems.iter().any(|p| p.contains("50-byte calendar limit")), "{:?}", got.problems);
}

#[test]
fn tnef_attachment_gives_a_hint() {
    let tnef = part(
        "application/ms-tnef; name=winmail.dat",
        "Content-Transfer-Encoding: base64\r\n",
        &base64(b"\x78\x9f\x3e\x22"),
    );
    let got = run(&multipart("mixed", "m", HEADERS, &[part("text/plain", "", "hi"), tnef]));
    assert!(got.calendars.is_empty());
    assert!(got.problems.iter().any(|p| p.starts_with("TNEF (winmail.dat)")), "{:?}", got.problems);
}

#[test]
fn rfc2047_subject_is_decoded() {
    let got = run("Subject: =?UTF-8?Q?R=C3=A9union_d=27=C3=A9quipe?=\r\nFrom: a@example.org\r\n\r\nbody");
    assert_eq!(got.subject.as_deref(), Some("Réunion d'équipe"));
    let got = run("Subject: =?ISO-8859-1?B?Uul1bmlvbg==?=\r\n\r\nbody");
    assert_eq!(got.subject.as_deref(), Some("Réunion"));
}

#[test]
fn header_recipients_in_order_and_deduplicated() {
    let mail = "From: a@example.org\r\nSender: Secretary <Sec@Example.org>\r\n\
X-Original-To: Zed@example.com\r\nTo: One <one@example.com>, Two@Example.com\r\n\
Cc: two@example.com, three@example.com\r\nDelivered-To: assistant@example.com\r\n\
delivered-to: ONE@example.com\r\nMessage-ID: <id-1@example.org>\r\n\r\nbody";
    let got = run(mail);
    let expected =
        ["one@example.com", "two@example.com", "three@example.com", "assistant@example.com", "zed@example.com"];
    assert_eq!(got.header_recipients, expected);
    assert_eq!(got.sender.as_deref(), Some("sec@example.org"));
    assert_eq!(got.message_id.as_deref(), Some("id-1@example.org"));
}

#[test]
fn authentication_results_topmost_first() {
    let mail = "Authentication-Results: mx.example.com;\r\n spf=pass smtp.mailfrom=example.org\r\n\
Received: from a by b\r\nAuthentication-Results: relay.example.net; dkim=fail\r\nFrom: a@example.org\r\n\r\nbody";
    let got = run(mail);
    assert_eq!(
        got.authentication_results,
        ["mx.example.com; spf=pass smtp.mailfrom=example.org", "relay.example.net; dkim=fail"]
    );
}

#[test]
fn leading_blank_line_of_spaces_is_skipped() {
    let mail = format!("{}\r\n{}", " ".repeat(250), multipart("mixed", "m", HEADERS, &[calendar_part()]));
    let got = run(&mail);
    assert_eq!(got.from.as_deref(), Some("alice@example.org"));
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].method_param.as_deref(), Some("REQUEST"));
}

#[test]
fn calendar_text_outside_any_part_is_recovered() {
    let mail = format!(
        "{HEADERS}Content-Type: multipart/mixed; boundary=\"declared\"\r\n\r\n--undeclared\r\n\
Content-Type: text/calendar\r\n\r\n{ICS}--undeclared--\r\n"
    );
    let got = run(&mail);
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].bytes, ICS.trim_end().as_bytes());
}

/// A multipart body written by hand, for delimiters the `multipart` helper would not write.
fn raw_mail(content_type: &str, body: &str) -> String {
    format!("{HEADERS}MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n{body}")
}

#[test]
fn a_boundary_inside_a_line_is_text_not_a_delimiter() {
    // mail-parser split here, and found an attachment inside the text/plain part.
    let quoted = base64_calendar_attachment(ICS);
    let body = format!("--m\r\nContent-Type: text/plain\r\n\r\nquoted: --m\r\n{quoted}\r\n--m--\r\n");
    let got = run(&raw_mail("multipart/mixed; boundary=m", &body));
    assert!(got.calendars.is_empty(), "{got:?}");
    assert!(got.problems.is_empty(), "{:?}", got.problems);
}

#[test]
fn a_boundary_that_only_starts_a_line_is_no_delimiter() {
    let attachment = base64_calendar_attachment(ICS);
    let body = format!("--m\r\nContent-Type: text/plain\r\n\r\nhi\r\n--m-2\r\n{attachment}\r\n--m--\r\n");
    let got = run(&raw_mail("multipart/mixed; boundary=m", &body));
    assert!(got.calendars.is_empty(), "the calendar is text of the first part, not a part: {got:?}");
}

#[test]
fn delimiters_with_trailing_whitespace() {
    let body = format!(
        "--m \t\r\nContent-Type: text/plain\r\n\r\nhi\r\n--m\t\r\n{}\r\n--m--  \r\n",
        base64_calendar_attachment(ICS)
    );
    let got = run(&raw_mail("multipart/mixed; boundary=m", &body));
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].bytes, ICS.as_bytes());
}

#[test]
fn missing_closing_boundary_still_decodes_the_last_part() {
    // mail-parser read such a part as raw base64 text and called it damaged.
    let body = format!("--m\r\nContent-Type: text/plain\r\n\r\nhi\r\n--m\r\n{}\r\n", base64_calendar_attachment(ICS));
    let got = run(&raw_mail("multipart/mixed; boundary=m", &body));
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].bytes, ICS.as_bytes());
    assert!(got.problems.is_empty(), "{:?}", got.problems);
}

#[test]
fn lf_and_crlf_mails_give_the_same_calendar() {
    let parts = [part("text/plain", "", "hi"), base64_calendar_attachment(ICS), calendar_part()];
    let crlf = multipart("mixed", "m", HEADERS, &parts);
    let lf = crlf.replace("\r\n", "\n");
    for mail in [crlf, lf] {
        let got = run(&mail);
        assert_eq!(got.calendars.len(), 1, "both copies are one calendar: {got:?}");
        assert_eq!(got.calendars[0].bytes, ICS.as_bytes(), "the base64 copy comes first, as encoded");
        assert_eq!(got.from.as_deref(), Some("alice@example.org"));
    }
}

#[test]
fn parts_without_headers() {
    for headless in [format!("\r\n{ICS}"), ICS.to_owned()] {
        let body = format!("--m\r\n{headless}\r\n--m--\r\n");
        // The last-resort scan of the raw mail would find this calendar too, but it records
        // a problem: a problem-free result shows the walk itself found it.
        let got = run(&raw_mail("multipart/mixed; boundary=m", &body));
        assert_eq!(got.calendars.len(), 1, "{headless:?}: {got:?}");
        assert_eq!(got.calendars[0].content_type, "text/plain");
        assert!(got.problems.is_empty(), "{:?}", got.problems);
    }
}

#[test]
fn text_plain_calendar_is_found_by_content_after_blank_lines() {
    // More leading whitespace than the first bytes sniffed, and Latin-1 quoted-printable.
    let qp = format!("{}{}", "=20\r\n".repeat(150), ICS.replace("Sync", "R=E9union"));
    let text = part("text/plain; charset=iso-8859-1", "Content-Transfer-Encoding: quoted-printable\r\n", &qp);
    let got = run(&multipart("mixed", "m", HEADERS, &[part("text/plain", "", "hi"), text]));
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].content_type, "text/plain");
    assert_eq!(got.calendars[0].charset.as_deref(), Some("utf-8"));
    assert!(String::from_utf8_lossy(&got.calendars[0].bytes).contains("SUMMARY:Réunion"));
    let text = part("text/plain", "Content-Transfer-Encoding: base64\r\n", &base64(b"Dear all, BEGIN:VCALENDAR"));
    assert!(run(&multipart("mixed", "m", HEADERS, &[text])).calendars.is_empty());
}

#[test]
fn quoted_printable_forwarded_message_global() {
    let inner = multipart("alternative", "in", "From: bob@example.net\r\n", &[calendar_part()]);
    let qp = inner.replace('=', "=3D");
    let forwarded = part("message/global", "Content-Transfer-Encoding: quoted-printable\r\n", &qp);
    let got = run(&multipart("mixed", "out", HEADERS, &[forwarded]));
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].bytes, ICS.as_bytes());
    assert!(got.problems.is_empty(), "{:?}", got.problems);
}

#[test]
fn digest_parts_are_forwarded_messages_by_default() {
    let inner = multipart("mixed", "in", "From: bob@example.net\r\n", &[base64_calendar_attachment(ICS)]);
    let got = run(&multipart("digest", "d", HEADERS, &[format!("\r\n{inner}")]));
    assert_eq!(got.calendars.len(), 1, "{got:?}");
}

#[test]
fn depth_limit_counts_from_the_top_entity() {
    // The calendar sits at depth 2: the mail (0), the inner multipart (1), the part (2).
    let inner = multipart("alternative", "in", "", &[base64_calendar_attachment(ICS)]);
    let mail = multipart("mixed", "out", HEADERS, &[inner]);
    let read = |max_depth| extract(mail.as_bytes(), &MimeLimits { max_depth, ..MimeLimits::default() });
    assert_eq!(read(2).calendars.len(), 1);
    let got = read(1);
    assert!(got.calendars.is_empty(), "{got:?}");
    assert_eq!(got.problems, ["MIME nesting deeper than 1 levels: deeper parts not read"]);
}

#[test]
fn damaged_base64_is_read_as_raw_text() {
    let damaged = part("application/octet-stream", "Content-Transfer-Encoding: base64\r\n", ICS);
    let got = run(&multipart("mixed", "m", HEADERS, &[damaged]));
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.calendars[0].bytes, ICS.as_bytes());
    assert_eq!(got.problems, ["application/octet-stream part with damaged encoding read as raw text"]);
}

#[test]
fn a_forwarded_message_says_whether_its_encoding_or_its_headers_were_wrong() {
    // Labelled base64 but written plain: read as written, and said so; still walked.
    let inner = multipart("mixed", "in", "From: bob@example.net\r\n", &[base64_calendar_attachment(ICS)]);
    let mislabelled = part("message/rfc822", "Content-Transfer-Encoding: base64\r\n", &inner);
    let got = run(&multipart("mixed", "m", HEADERS, &[mislabelled]));
    assert_eq!(got.calendars.len(), 1, "{got:?}");
    assert_eq!(got.problems, ["message/rfc822 part with damaged encoding read as raw text"]);
    // Decoded fine, but no header block: read as text, and said so as that.
    let text = base64(b"Forwarded without its headers, sorry\r\n");
    let headless = part("message/rfc822", "Content-Transfer-Encoding: base64\r\n", &text);
    let got = run(&multipart("mixed", "m", HEADERS, &[headless]));
    assert!(got.calendars.is_empty(), "{got:?}");
    assert_eq!(got.problems, ["message/rfc822 part without a header block read as text"]);
}

fn shared_dir(relative: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("shared").join(relative);
    if dir.exists() {
        Some(dir)
    } else {
        eprintln!("skipped: {} not found", dir.display());
        None
    }
}

fn corpus_mails() -> Vec<(String, Vec<u8>)> {
    let Some(dir) = shared_dir("corpus/public") else {
        return Vec::new();
    };
    let mut mails: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("corpus dir readable")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| {
            (p.file_name().unwrap_or_default().to_string_lossy().into_owned(), std::fs::read(&p).expect("readable"))
        })
        .collect();
    mails.sort();
    mails
}

#[test]
fn every_corpus_mail_but_tnef_yields_a_calendar() {
    for (name, raw) in corpus_mails() {
        let got = extract(&raw, &MimeLimits::default());
        if name == "tine20__outlook2003-winmail-dat-not-meeting.eml" {
            assert!(got.problems.iter().any(|p| p.starts_with("TNEF")), "{name}: {:?}", got.problems);
            continue;
        }
        assert!(!got.calendars.is_empty(), "{name}: no calendar, problems {:?}", got.problems);
        for cal in &got.calendars {
            let text = String::from_utf8_lossy(&cal.bytes).to_ascii_uppercase();
            assert!(text.contains("BEGIN:VCALENDAR"), "{name}: {} part without BEGIN:VCALENDAR", cal.content_type);
        }
    }
}

#[test]
fn peers_fixture_invite() {
    let Some(dir) = shared_dir("peers/fixtures") else {
        return;
    };
    let raw = std::fs::read(dir.join("invite.eml")).expect("fixture readable");
    let got = extract(&raw, &MimeLimits::default());
    assert_eq!(got.from.as_deref(), Some("alice@example.org"));
    assert!(got.header_recipients.contains(&"assistant@example.com".to_owned()));
    assert_eq!(got.calendars.len(), 1);
    assert_eq!(got.calendars[0].method_param.as_deref(), Some("REQUEST"));
    assert_eq!(got.message_id.as_deref(), Some("invite-001@example.org"));
}

/// Truncations and byte changes of real mails, deterministic: extract must
/// return (anything) for each.
#[test]
fn mutated_corpus_mails_never_panic() {
    let started = Instant::now();
    let limits = MimeLimits::default();
    let mut runs = 0;
    for (_, raw) in corpus_mails() {
        let step = (raw.len() / 20).max(1);
        for cut in (0..raw.len()).step_by(step) {
            extract(&raw[..cut], &limits);
            for (n, poison) in [b'-', b'\n', b'=', 0x00, 0xFF].into_iter().enumerate() {
                let mut changed = raw.clone();
                for i in (cut..changed.len()).step_by(89 + 16 * n) {
                    changed[i] = poison;
                }
                extract(&changed, &limits);
            }
            runs += 6;
        }
    }
    eprintln!("{runs} mutated mails in {:?}", started.elapsed());
}
