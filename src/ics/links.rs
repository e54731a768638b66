//! Every http(s) URL of an event, in the order join links are most likely
//! found: dedicated conference properties first, free text last.

use super::component::Component;
use super::lines::unescape_text;
use crate::model::Link;

/// Properties read first, in this order. Then other X- properties that name a
/// meeting link (`MEETING_X`), then other X- properties whose value is a URL,
/// then `TAIL`.
const HEAD: [&str; 6] = [
    "CONFERENCE",
    "X-GOOGLE-CONFERENCE",
    "X-MICROSOFT-SKYPETEAMSMEETINGURL",
    "X-MICROSOFT-ONLINEMEETINGEXTERNALLINK",
    "X-MICROSOFT-ONLINEMEETINGURL",
    "X-MICROSOFT-ONLINEMEETINGCONFLINK",
];
/// Parts of X- property names that hold a meeting link somewhere in their value
/// (`X-MICROSOFT-ONLINEMEETINGJOINURL`, `X-ZOOM-MEETINGURL`, …): searched like free text.
const MEETING_X: [&str; 5] = ["ONLINEMEETING", "MEETINGURL", "MEETINGLINK", "JOINURL", "CONFERENCE"];
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
    let names_meeting = |name: &str| MEETING_X.iter().any(|part| name.contains(part));
    let (meeting_x, other_x): (Vec<_>, Vec<_>) = event
        .props
        .iter()
        .filter(|p| {
            p.name.starts_with("X-") && !HEAD.contains(&p.name.as_str()) && !SKIPPED_X.contains(&p.name.as_str())
        })
        .partition(|p| names_meeting(&p.name));
    for prop in meeting_x {
        add(&prop.name, &unescape_text(&prop.value));
    }
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
/// Trailing punctuation is not part of a URL; `&amp;` is decoded; Outlook Safe
/// Links and Google redirects are replaced by the URL they wrap (`unwrap_redirect`).
pub(super) fn find_urls(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = next_scheme(&lower, from) {
        let rest = text.get(at..).unwrap_or_default();
        let end =
            rest.find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | '`')).unwrap_or(rest.len());
        let candidate = clean(rest.get(..end).unwrap_or_default());
        if let Some(url) = web_url(&candidate) {
            found.push(unwrap_redirect(candidate, &url));
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
        let found = at + memchr::memmem::find(lower.as_bytes().get(at..)?, b"http")?;
        let after = lower.get(found + 4..).unwrap_or_default();
        if after.starts_with("://") || after.starts_with("s://") {
            return Some(found);
        }
        at = found + 4;
    }
}

fn clean(raw: &str) -> String {
    let trim = |text: &str| text.trim_end_matches(['.', ',', ';', ')', '>', ']', '"', '\'', ':', '!', '?']).to_string();
    if !raw.contains('&') {
        // no entity to decode or cut at: most URLs
        return trim(raw);
    }
    let decoded = raw.replace("&amp;", "&");
    let cut = ["&lt;", "&gt;", "&quot;", "&nbsp;", "&#"].iter().filter_map(|e| decoded.find(e)).min();
    trim(cut.and_then(|at| decoded.get(..at)).unwrap_or(&decoded))
}

/// Hosts of Outlook Safe Links: `nam12.safelinks.protection.outlook.com`, and the
/// US government clouds' `*.safelinks.protection.office365.us`.
const SAFE_LINKS_DOMAINS: [&str; 2] = ["safelinks.protection.outlook.com", "safelinks.protection.office365.us"];
/// A redirect wrapping a redirect (Safe Links around a Google link) is unwrapped
/// this many times at most.
const MAX_UNWRAPS: usize = 4;

/// The URL a redirect wraps: `https://*.safelinks.protection.outlook.com/?url=<encoded>&…`
/// (Outlook Safe Links) and `https://www.google.com/url?q=<encoded>&…` (Google). Anything
/// else, or a wrapper whose parameter is not an http(s) URL, is returned as it is.
/// `parsed` is `candidate`, already parsed.
fn unwrap_redirect(candidate: String, parsed: &url::Url) -> String {
    let Some(mut current) = wrapped_url(parsed) else {
        return candidate;
    };
    for _ in 1..MAX_UNWRAPS {
        match url::Url::parse(&current).ok().and_then(|url| wrapped_url(&url)) {
            Some(inner) => current = inner,
            None => break,
        }
    }
    current
}

fn wrapped_url(url: &url::Url) -> Option<String> {
    let host = url.host_str()?.to_ascii_lowercase();
    let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    let param = if SAFE_LINKS_DOMAINS.iter().any(|d| under(d)) {
        "url"
    } else if (host == "www.google.com" || host == "google.com") && url.path() == "/url" {
        "q"
    } else {
        return None;
    };
    let (_, inner) = url.query_pairs().find(|(k, _)| k == param)?;
    let inner = inner.trim();
    is_web_url(inner).then(|| inner.to_string())
}

fn is_web_url(candidate: &str) -> bool {
    web_url(candidate).is_some()
}

/// The candidate parsed, when it is an http(s) URL with a host.
fn web_url(candidate: &str) -> Option<url::Url> {
    url::Url::parse(candidate)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()))
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

    #[test]
    fn redirects_are_unwrapped() {
        let teams = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_X%40thread.v2/0?context=%7b%22Tid%22%7d";
        let cases: &[(&str, &str)] = &[
            // Outlook Safe Links, any region; the wrapped URL's own escapes survive.
            (
                "https://nam12.safelinks.protection.outlook.com/?url=https%3A%2F%2Fteams.microsoft.com%2Fl%2Fmeetup-join%2F19%253ameeting_X%2540thread.v2%2F0%3Fcontext%3D%257b%2522Tid%2522%257d&data=05%7C01&sdata=abc%3D&reserved=0",
                teams,
            ),
            (
                "https://eur01.safelinks.protection.outlook.com/?url=https%3A%2F%2Fus02web.zoom.us%2Fj%2F851%3Fpwd%3Dx&data=1",
                "https://us02web.zoom.us/j/851?pwd=x",
            ),
            (
                "https://gcc02.safelinks.protection.office365.us/?data=1&url=https%3A%2F%2Fdod.teams.microsoft.us%2Fl%2Fmeetup-join%2F1",
                "https://dod.teams.microsoft.us/l/meetup-join/1",
            ),
            // Google redirect.
            (
                "https://www.google.com/url?q=https%3A%2F%2Fmeet.google.com%2Fabc-defg-hij&sa=D&ust=1&usg=AOv",
                "https://meet.google.com/abc-defg-hij",
            ),
            ("https://www.google.com/url?q=https://zoom.us/j/1&sa=D", "https://zoom.us/j/1"),
            // Safe Links around a Google redirect: both unwrapped.
            (
                "https://nam04.safelinks.protection.outlook.com/?url=https%3A%2F%2Fwww.google.com%2Furl%3Fq%3Dhttps%253A%252F%252Fzoom.us%252Fj%252F7%26sa%3DD&data=1",
                "https://zoom.us/j/7",
            ),
            // Unwrapping fails: the wrapper is kept.
            ("https://nam12.safelinks.protection.outlook.com/?data=1", "https://nam12.safelinks.protection.outlook.com/?data=1"),
            (
                "https://nam12.safelinks.protection.outlook.com/?url=javascript%3Aalert%281%29",
                "https://nam12.safelinks.protection.outlook.com/?url=javascript%3Aalert%281%29",
            ),
            ("https://www.google.com/url?q=not%20a%20url", "https://www.google.com/url?q=not%20a%20url"),
            // Look-alikes are not unwrapped.
            ("https://www.google.com/search?q=https%3A%2F%2Fzoom.us%2Fj%2F1", "https://www.google.com/search?q=https%3A%2F%2Fzoom.us%2Fj%2F1"),
            (
                "https://safelinks.protection.outlook.com.evil.example/?url=https%3A%2F%2Fzoom.us%2Fj%2F1",
                "https://safelinks.protection.outlook.com.evil.example/?url=https%3A%2F%2Fzoom.us%2Fj%2F1",
            ),
        ];
        for (wrapped, want) in cases {
            assert_eq!(find_urls(wrapped), [*want], "{wrapped}");
        }
        // In HTML with `&amp;`, as Outlook writes it into X-ALT-DESC / DESCRIPTION.
        let html = "<a href=\"https://nam12.safelinks.protection.outlook.com/?url=https%3A%2F%2Fzoom.us%2Fj%2F9&amp;data=1\">Join</a>";
        assert_eq!(find_urls(html), ["https://zoom.us/j/9"]);
    }

    fn links_of(text: &str) -> Vec<(String, String)> {
        let lines = text.lines().filter_map(parse_content_line).collect();
        let calendars = build_calendars(lines, &mut Vec::new());
        let mut events = Vec::new();
        calendars.iter().for_each(|c| c.descendants("VEVENT", &mut events));
        events.first().map(|e| collect_links(e)).unwrap_or_default().into_iter().map(|l| (l.url, l.source)).collect()
    }

    #[test]
    fn online_meeting_properties_come_before_free_text() {
        let got = links_of(
            "BEGIN:VEVENT\n\
            DESCRIPTION:https://d.example/\n\
            X-MICROSOFT-ONLINEMEETINGCONFLINK:conf:sip:a@b.com\n\
            X-MICROSOFT-ONLINEMEETINGURL:https://teams.microsoft.us/l/meetup-join/u\n\
            X-MICROSOFT-ONLINEMEETINGEXTERNALLINK:https://teams.microsoft.com/l/meetup-join/e\n\
            X-MICROSOFT-ONLINEMEETINGJOINURL:Join at <https://teams.microsoft.com/l/meetup-join/j>\n\
            X-OTHER:https://other.example/\n\
            END:VEVENT",
        );
        let want = [
            ("https://teams.microsoft.com/l/meetup-join/e", "X-MICROSOFT-ONLINEMEETINGEXTERNALLINK"),
            ("https://teams.microsoft.us/l/meetup-join/u", "X-MICROSOFT-ONLINEMEETINGURL"),
            ("https://teams.microsoft.com/l/meetup-join/j", "X-MICROSOFT-ONLINEMEETINGJOINURL"),
            ("https://other.example/", "X-OTHER"),
            ("https://d.example/", "DESCRIPTION"),
        ];
        let want: Vec<(String, String)> = want.iter().map(|(u, s)| (u.to_string(), s.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_wrapped_and_a_plain_copy_count_once() {
        let got = links_of(
            "BEGIN:VEVENT\n\
            LOCATION:https://zoom.us/j/5\n\
            DESCRIPTION:Join https://nam12.safelinks.protection.outlook.com/?url=https%3A%2F%2Fzoom.us%2Fj%2F5&data=1\n\
            END:VEVENT",
        );
        assert_eq!(got, [("https://zoom.us/j/5".to_string(), "LOCATION".to_string())]);
    }
}
