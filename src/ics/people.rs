//! ORGANIZER and ATTENDEE → lowercased mail addresses. Producers write
//! `mailto:` in any case, bare addresses, principal URLs with the address in
//! `EMAIL=`, iCloud relay addresses, and the odd `CN=ORGANIZER:mailto:…`.

use super::lines::ContentLine;
use crate::model::Organizer;

/// iCloud's relay domain: the real address is in `EMAIL=`.
const RELAY_SUFFIX: &str = "@imip.me.com";

pub(super) fn organizer(prop: &ContentLine) -> Option<Organizer> {
    let email = address(prop)?;
    let sent_by = prop.param("SENT-BY").or_else(|| prop.param("SEND-BY")).and_then(mail_address);
    let name = prop.param("CN").map(str::trim).filter(|n| !n.is_empty()).map(str::to_string);
    Some(Organizer { email, sent_by, name })
}

/// The address of a calendar user: the `mailto:` value unless it is not a
/// usable address (principal URL, relay), then `EMAIL=`, then whatever looks
/// like an address.
pub(super) fn address(prop: &ContentLine) -> Option<String> {
    let from_value = mail_address(&prop.value);
    let from_param = prop.param("EMAIL").and_then(mail_address);
    match from_value {
        Some(value) if !value.ends_with(RELAY_SUFFIX) => Some(value),
        value => from_param.or(value),
    }
}

/// `mailto:X`, `MAILTO:X`, a bare `X`, or junk ending in `mailto:X` → `x`.
fn mail_address(raw: &str) -> Option<String> {
    let lower = raw.trim().to_lowercase();
    let after_scheme = match lower.rfind("mailto:") {
        Some(at) => lower.get(at + "mailto:".len()..)?,
        None => lower.as_str(),
    };
    let candidate = after_scheme.trim().trim_matches(['"', '<', '>']);
    looks_like_address(candidate).then(|| candidate.to_string())
}

fn looks_like_address(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    !local.is_empty() && !domain.is_empty() && !text.contains(|c: char| c.is_whitespace() || "/:;,<>\"".contains(c))
}

#[cfg(test)]
mod tests {
    use super::super::lines::parse_content_line;
    use super::*;

    fn org(line: &str) -> Option<(String, Option<String>, Option<String>)> {
        parse_content_line(line).and_then(|p| organizer(&p)).map(|o| (o.email, o.sent_by, o.name))
    }

    #[test]
    fn organizers() {
        let s = |t: &str| Some(t.to_string());
        let cases = [
            (
                "ORGANIZER;CN=Inbox Apptest:mailto:Inbox@Gmail.com",
                Some(("inbox@gmail.com".into(), None, s("Inbox Apptest"))),
            ),
            ("ORGANIZER;CN=\"Name\":MAILTO:name@example.com", Some(("name@example.com".into(), None, s("Name")))),
            ("ORGANIZER:Mailto:a@b.c", Some(("a@b.c".into(), None, None))),
            ("ORGANIZER:bare@example.com", Some(("bare@example.com".into(), None, None))),
            (
                "ORGANIZER;CN=abc;SENT-BY=\"mailto:Abc@yahoo.com\":mailto:abc@yahoo.com",
                Some(("abc@yahoo.com".into(), s("abc@yahoo.com"), s("abc"))),
            ),
            ("ORGANIZER;SEND-BY=\"mailto:p@m.de\":mailto:q@m.de", Some(("q@m.de".into(), s("p@m.de"), None))),
            (
                "ORGANIZER;CN=Cornelius Weiss;EMAIL=\"mail@corneliusweiss.de\":/128868715/principal/",
                Some(("mail@corneliusweiss.de".into(), None, s("Cornelius Weiss"))),
            ),
            (
                "ORGANIZER;CN=Ben;EMAIL=benbitdiddle@icloud.com:mailto:2_HEZDS@imip.me.com",
                Some(("benbitdiddle@icloud.com".into(), None, s("Ben"))),
            ),
            ("ORGANIZER:mailto:2_HEZDS@imip.me.com", Some(("2_hezds@imip.me.com".into(), None, None))),
            (
                "ORGANIZER:CN=ORGANIZER:mailto:webmaster@trenitalia.it",
                Some(("webmaster@trenitalia.it".into(), None, None)),
            ),
            ("ORGANIZER:", None),
            ("ORGANIZER;CN=x:mailto:", None),
            ("ORGANIZER:/principal/1/", None),
        ];
        for (line, want) in cases {
            assert_eq!(org(line), want, "{line}");
        }
    }
}
