//! Every http(s) URL of an event, in the order join links are most likely
//! found: dedicated conference properties first, free text last.

use super::component::Component;
use super::lines::unescape_text;
use crate::model::Link;

/// Properties read first, in this order. Other X- properties whose value is a
/// URL follow, then `TAIL`.
const HEAD: [&str; 4] =
    ["CONFERENCE", "X-GOOGLE-CONFERENCE", "X-MICROSOFT-SKYPETEAMSMEETINGURL", "X-MICROSOFT-ONLINEMEETINGCONFLINK"];
const TAIL: [&str; 3] = ["URL", "LOCATION", "DESCRIPTION"];
/// The HTML copy of DESCRIPTION: it repeats DESCRIPTION's links in markup.
const SKIPPED_X: [&str; 1] = ["X-ALT-DESC"];

pub(super) fn collect_links(event: &Component) -> Vec<Link> {
    let mut links: Vec<Link> = Vec::new();
    let mut add = |source: &str, text: &str| {
        for url in find_urls(text) {
            if !links.iter().any(|l| l.url == url) {
                links.push(Link { url, source: source.to_string() });
            }
        }
    };
    for name in HEAD {
        event.props_named(name).for_each(|p| add(name, &unescape_text(&p.value)));
    }
    let other_x = event.props.iter().filter(|p| {
        p.name.starts_with("X-") && !HEAD.contains(&p.name.as_str()) && !SKIPPED_X.contains(&p.name.as_str())
    });
    for prop in other_x {
        let value = unescape_text(&prop.value);
        if starts_with_http(value.trim()) {
            add(&prop.name, &value);
        }
    }
    for name in TAIL {
        event.props_named(name).for_each(|p| add(name, &unescape_text(&p.value)));
    }
    links
}

fn starts_with_http(text: &str) -> bool {
    let head = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    head.starts_with("http://") || head.starts_with("https://")
}

/// URLs in free text, plain or inside HTML (`<https://…>`, `href="…"`).
/// Trailing punctuation is not part of a URL; `&amp;` is decoded.
pub(super) fn find_urls(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = next_scheme(&lower, from) {
        let rest = text.get(at..).unwrap_or_default();
        let end = rest.find(|c: char| c.is_whitespace() || "<>\"'`".contains(c)).unwrap_or(rest.len());
        let candidate = clean(rest.get(..end).unwrap_or_default());
        if is_web_url(&candidate) {
            found.push(candidate);
        }
        from = at + end.max(1);
    }
    found
}

/// Start of the next `http://` or `https://`; one forward scan, so finding
/// every URL of a long text stays linear.
fn next_scheme(lower: &str, from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let found = at + lower.get(at..)?.find("http")?;
        let after = lower.get(found + 4..).unwrap_or_default();
        if after.starts_with("://") || after.starts_with("s://") {
            return Some(found);
        }
        at = found + 4;
    }
}

fn clean(raw: &str) -> String {
    let decoded = raw.replace("&amp;", "&");
    let cut = ["&lt;", "&gt;", "&quot;", "&nbsp;", "&#"].iter().filter_map(|e| decoded.find(e)).min();
    let decoded = cut.and_then(|at| decoded.get(..at)).unwrap_or(&decoded);
    decoded.trim_end_matches(['.', ',', ';', ')', '>', ']', '"', '\'', ':', '!', '?']).to_string()
}

fn is_web_url(candidate: &str) -> bool {
    url::Url::parse(candidate)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::super::component::build_calendars;
    use super::super::lines::parse_content_line;
    use super::*;

    #[test]
    fn urls_in_text() {
        let cases: &[(&str, &[&str])] = &[
            ("Join: https://zoom.us/j/123?pwd=abc.", &["https://zoom.us/j/123?pwd=abc"]),
            ("<https://meet.google.com/abc-defg-hij>", &["https://meet.google.com/abc-defg-hij"]),
            ("<a href=\"https://x.example/a?b=1&amp;c=2\">x</a>", &["https://x.example/a?b=1&c=2"]),
            (
                "(see HTTPS://Example.com/path), and http://b.example/",
                &["HTTPS://Example.com/path", "http://b.example/"],
            ),
            ("conf:sip:a@b.com;gruu;opaque=app:conf:focus", &[]),
            ("https:// nothing, http://", &[]),
            ("&lt;https://a.example/x&gt;", &["https://a.example/x"]),
            ("ünïcode https://a.example/ö", &["https://a.example/ö"]),
        ];
        for (text, want) in cases {
            assert_eq!(find_urls(text), *want, "{text}");
        }
    }

    #[test]
    fn property_order_and_dedup() {
        let text = "BEGIN:VEVENT\n\
            DESCRIPTION:Join https://teams.microsoft.com/l/meetup-join/1 or https://d.example/\n\
            LOCATION:https://zoom.us/j/1\n\
            URL:https://u.example/\n\
            X-ALT-DESC:<a href=\"https://alt.example/\">\n\
            X-MICROSOFT-SCHEDULINGSERVICEUPDATEURL:https://scheduler.example/\n\
            X-MICROSOFT-SKYPETEAMSPROPERTIES:{\"cid\":\"x\"\\,\"url\":\"https://no.example/\"}\n\
            X-MICROSOFT-ONLINEMEETINGCONFLINK:conf:sip:a@b.com\\;gruu\\;opaque=app:conf\n\
            X-MICROSOFT-SKYPETEAMSMEETINGURL:https://teams.microsoft.com/l/meetup-join/1\n\
            ATTACH:https://attach.example/file\n\
            END:VEVENT";
        let lines = text.lines().filter_map(parse_content_line).collect();
        let calendars = build_calendars(lines, &mut Vec::new());
        let mut events = Vec::new();
        calendars.iter().for_each(|c| c.descendants("VEVENT", &mut events));
        let got: Vec<(String, String)> = events
            .first()
            .map(|e| collect_links(e))
            .unwrap_or_default()
            .into_iter()
            .map(|l| (l.url, l.source))
            .collect();
        let want = [
            ("https://teams.microsoft.com/l/meetup-join/1", "X-MICROSOFT-SKYPETEAMSMEETINGURL"),
            ("https://scheduler.example/", "X-MICROSOFT-SCHEDULINGSERVICEUPDATEURL"),
            ("https://u.example/", "URL"),
            ("https://zoom.us/j/1", "LOCATION"),
            ("https://d.example/", "DESCRIPTION"),
        ];
        let want: Vec<(String, String)> = want.iter().map(|(u, s)| (u.to_string(), s.to_string())).collect();
        assert_eq!(got, want);
    }
}
