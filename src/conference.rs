//! Which web conference an event uses, read from its links. Pure.
//!
//! A consent link (`{base}/{company}/{provider}/{s|d}/{token}`) stands in for the
//! provider's own join link; any raw join link beside it lets people skip the
//! consent page (design.md, precise rule 6).

use serde::Serialize;
use url::Url;

use crate::config::LinkType;
use crate::model::Link;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Zoom,
    GoogleMeet,
    Teams,
    Webex,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Zoom => "zoom",
            Provider::GoogleMeet => "google_meet",
            Provider::Teams => "teams",
            Provider::Webex => "webex",
        }
    }

    pub fn from_name(name: &str) -> Option<Provider> {
        match name {
            "zoom" => Some(Provider::Zoom),
            "google_meet" => Some(Provider::GoogleMeet),
            "teams" => Some(Provider::Teams),
            "webex" => Some(Provider::Webex),
            _ => None,
        }
    }
}

/// A consent link, taken apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentLink {
    pub company: String,
    /// The `{provider}` path segment as written.
    pub provider: String,
    pub link_type: LinkType,
}

/// The conference an event uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conference {
    /// None for a consent link whose provider segment is not one we know.
    pub provider: Option<Provider>,
    pub url: String,
    pub consent: Option<ConsentLink>,
    /// Raw join links of recognised providers besides the chosen link.
    #[serde(skip)]
    pub other_join_links: Vec<String>,
}

/// Picks the event's conference. Every link is kept; one is chosen as the meeting
/// link by this priority:
///
/// 1. the first consent link under `consent_base` (its provider segment names the
///    provider), whatever property it came from;
/// 2. else the first recognised join link, in the order the ICS reader found the
///    links: `CONFERENCE`, `X-GOOGLE-CONFERENCE`, `X-MICROSOFT-SKYPETEAMSMEETINGURL`,
///    `X-MICROSOFT-ONLINEMEETINGEXTERNALLINK`, `X-MICROSOFT-ONLINEMEETINGURL`,
///    `X-MICROSOFT-ONLINEMEETINGCONFLINK`, other meeting-link X- properties, other X-
///    properties holding a URL, then `URL`, `LOCATION`, `DESCRIPTION` (each in file
///    order, Safe Links and Google redirects already unwrapped by the reader);
/// 3. else none.
///
/// Dial-in and "join by phone" links (`tel:`, `dialin.teams.microsoft.com`,
/// `zoom.us/u/…`, Webex call-in pages) are never join links. The raw join links not
/// chosen are kept in `other_join_links` (a consent link's bypass check needs them).
pub fn detect(links: &[Link], consent_base: Option<&str>) -> Option<Conference> {
    let consent_base = consent_base.and_then(|b| Url::parse(b).ok());
    let mut consent: Option<(String, ConsentLink)> = None;
    let mut joins: Vec<(Provider, String)> = Vec::new();
    for link in links {
        let Ok(url) = Url::parse(&link.url) else { continue };
        if let Some(base) = &consent_base {
            if let Some(c) = parse_consent_link(&url, base) {
                if consent.is_none() {
                    consent = Some((link.url.clone(), c));
                }
                continue;
            }
        }
        if let Some(p) = join_link_provider(&url) {
            if !joins.iter().any(|(_, u)| u == &link.url) {
                joins.push((p, link.url.clone()));
            }
        }
    }
    match consent {
        Some((url, c)) => Some(Conference {
            provider: Provider::from_name(&c.provider),
            url,
            consent: Some(c),
            other_join_links: joins.into_iter().map(|(_, u)| u).collect(),
        }),
        None => {
            let mut joins = joins.into_iter();
            let (provider, url) = joins.next()?;
            Some(Conference {
                provider: Some(provider),
                url,
                consent: None,
                other_join_links: joins.map(|(_, u)| u).collect(),
            })
        }
    }
}

/// `{base}/{company}/{provider}/{s|d}/{token}` under `base` (same scheme, host and port).
fn parse_consent_link(url: &Url, base: &Url) -> Option<ConsentLink> {
    if url.scheme() != base.scheme()
        || !url.host_str()?.eq_ignore_ascii_case(base.host_str()?)
        || url.port_or_known_default() != base.port_or_known_default()
    {
        return None;
    }
    let base_path: Vec<&str> = base.path_segments()?.filter(|s| !s.is_empty()).collect();
    let path: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    let rest = path.strip_prefix(base_path.as_slice())?;
    let [company, provider, kind, token] = rest else { return None };
    if token.is_empty() {
        return None;
    }
    let link_type = match *kind {
        "s" => LinkType::Static,
        "d" => LinkType::Dynamic,
        _ => return None,
    };
    Some(ConsentLink { company: company.to_ascii_lowercase(), provider: provider.to_ascii_lowercase(), link_type })
}

/// Teams meeting hosts: commercial, consumer, and the US government clouds (GCC High,
/// DoD, and the GCC `gov.` host).
const TEAMS_HOSTS: [&str; 5] =
    ["teams.microsoft.com", "teams.live.com", "teams.microsoft.us", "gov.teams.microsoft.us", "dod.teams.microsoft.us"];

/// Dial-in numbers and "join by phone" pages: `dialin.teams.microsoft.com/…`,
/// `zoom.us/u/…` (Zoom's local-number list), `*/zoomconference`, Webex
/// `globalcallin.php` / `/callin` pages.
fn is_dial_in(host: &str, path: &str) -> bool {
    let path = path.to_ascii_lowercase();
    host.starts_with("dialin.")
        || host.contains(".dialin.")
        || path.starts_with("/u/")
        || path.contains("globalcallin")
        || path.contains("/callin")
        || path.contains("/dialin")
}

/// The provider of a raw join link, if it is one the recorders can join.
fn join_link_provider(url: &Url) -> Option<Provider> {
    if !matches!(url.scheme(), "https" | "http") {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    let path = url.path();
    if is_dial_in(&host, path) {
        return None;
    }
    let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    if under("zoom.us") || under("zoom.com") || under("zoomgov.com") {
        let meeting = ["/j/", "/w/", "/my/", "/s/", "/wc/", "/webinar/"].iter().any(|p| path.starts_with(p));
        return meeting.then_some(Provider::Zoom);
    }
    if host == "meet.google.com" {
        let code = path.trim_matches('/');
        return (!code.is_empty() && code.contains('-')).then_some(Provider::GoogleMeet);
    }
    if TEAMS_HOSTS.contains(&host.as_str()) {
        let meeting = path.starts_with("/l/meetup-join/") || path.starts_with("/meet/") || path.starts_with("/l/meet/");
        return meeting.then_some(Provider::Teams);
    }
    if under("webex.com") {
        let meeting = ["/meet/", "/join/", "/wbxmjs/", "/webappng/"].iter().any(|p| path.starts_with(p))
            || path.ends_with("/j.php")
            || path.contains("/meet/");
        return meeting.then_some(Provider::Webex);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(urls: &[&str]) -> Vec<Link> {
        urls.iter().map(|u| Link { url: u.to_string(), source: "DESCRIPTION".into() }).collect()
    }

    const BASE: Option<&str> = Some("https://consent.assistant.example.com");

    #[test]
    fn recognises_each_provider() {
        let cases = [
            ("https://us02web.zoom.us/j/85551234567?pwd=abc", Some(Provider::Zoom)),
            ("https://zoom.us/my/alice", Some(Provider::Zoom)),
            ("https://zoom.us/pricing", None),
            ("https://meet.google.com/abc-defg-hij", Some(Provider::GoogleMeet)),
            ("https://meet.google.com/", None),
            (
                "https://teams.microsoft.com/l/meetup-join/19%3ameeting_X%40thread.v2/0?context=%7b%7d",
                Some(Provider::Teams),
            ),
            ("https://teams.live.com/meet/9344", Some(Provider::Teams)),
            ("https://acme.webex.com/acme/j.php?MTID=m123", Some(Provider::Webex)),
            ("https://acme.webex.com/meet/alice", Some(Provider::Webex)),
            ("https://example.com/j/123", None),
            ("https://evilzoom.us/j/123", None),
        ];
        for (url, want) in cases {
            let got = detect(&links(&[url]), None).and_then(|c| c.provider);
            assert_eq!(got, want, "{url}");
        }
    }

    #[test]
    fn teams_government_clouds() {
        for url in [
            "https://teams.microsoft.us/l/meetup-join/19%3ameeting_X%40thread.v2/0",
            "https://gov.teams.microsoft.us/l/meetup-join/19%3ameeting_X%40thread.v2/0",
            "https://dod.teams.microsoft.us/l/meetup-join/19%3ameeting_X%40thread.v2/0",
        ] {
            assert_eq!(detect(&links(&[url]), None).and_then(|c| c.provider), Some(Provider::Teams), "{url}");
        }
        // Other hosts under the gov domain are not meeting hosts.
        assert_eq!(detect(&links(&["https://evil.teams.microsoft.us/l/meetup-join/1"]), None), None);
    }

    #[test]
    fn dial_in_links_are_not_conference_links() {
        for url in [
            "https://dialin.teams.microsoft.com/8f1b2c3d-aaaa-bbbb-cccc-1234567890ab?id=123456789",
            "https://dialin.teams.microsoft.us/8f1b2c3d?id=1",
            "https://zoom.us/u/abcDEF123",
            "https://us02web.zoom.us/u/kdXyZ",
            "https://acme.webex.com/acme/globalcallin.php?MTID=m1",
            "https://acme.webex.com/cmp3300/webcomponents/widget/globalcallin/globalcallin.do?siteurl=acme",
            "tel:+15551234567,,85551234567#",
            "tel:+1-555-123-4567",
        ] {
            assert_eq!(detect(&links(&[url]), None), None, "{url}");
        }
        // Beside a join link, the join link is chosen and the dial-in is not kept as one.
        let c = detect(&links(&["tel:+15551234567", "https://zoom.us/u/abc", "https://zoom.us/j/1"]), None).unwrap();
        assert_eq!(c.url, "https://zoom.us/j/1");
        assert!(c.other_join_links.is_empty());
    }

    #[test]
    fn consent_link_beats_an_earlier_join_link() {
        let c = detect(
            &links(&[
                "https://teams.microsoft.com/l/meetup-join/1",
                "https://zoom.us/j/2",
                "https://consent.assistant.example.com/acme/teams/s/tok",
            ]),
            BASE,
        )
        .unwrap();
        assert_eq!(c.url, "https://consent.assistant.example.com/acme/teams/s/tok");
        assert_eq!(
            c.other_join_links,
            vec!["https://teams.microsoft.com/l/meetup-join/1".to_string(), "https://zoom.us/j/2".to_string()]
        );
    }

    #[test]
    fn first_recognised_link_wins_and_others_are_kept() {
        let c = detect(
            &links(&["https://example.com/agenda", "https://meet.google.com/abc-defg-hij", "https://zoom.us/j/1"]),
            None,
        )
        .unwrap();
        assert_eq!(c.provider, Some(Provider::GoogleMeet));
        assert_eq!(c.other_join_links, vec!["https://zoom.us/j/1".to_string()]);
    }

    #[test]
    fn consent_link_is_taken_apart() {
        let c =
            detect(&links(&["https://zoom.us/j/1", "https://consent.assistant.example.com/acme/zoom/d/tok123"]), BASE)
                .unwrap();
        assert_eq!(c.url, "https://consent.assistant.example.com/acme/zoom/d/tok123");
        assert_eq!(c.provider, Some(Provider::Zoom));
        assert_eq!(
            c.consent,
            Some(ConsentLink { company: "acme".into(), provider: "zoom".into(), link_type: LinkType::Dynamic })
        );
        assert_eq!(c.other_join_links, vec!["https://zoom.us/j/1".to_string()]);
    }

    #[test]
    fn malformed_consent_links_are_not_consent_links() {
        for url in [
            "https://consent.assistant.example.com/acme/zoom/x/tok",
            "https://consent.assistant.example.com/acme/zoom/d",
            "https://consent.assistant.example.com/acme/zoom/d/tok/extra",
            "http://consent.assistant.example.com/acme/zoom/d/tok",
        ] {
            assert_eq!(detect(&links(&[url]), BASE), None, "{url}");
        }
    }

    #[test]
    fn consent_base_with_a_path() {
        let c = detect(&links(&["https://example.com/consent/globex/teams/s/t"]), Some("https://example.com/consent/"))
            .unwrap();
        assert_eq!(c.consent.unwrap().company, "globex");
    }

    #[test]
    fn no_links_no_conference() {
        assert_eq!(detect(&[], BASE), None);
    }
}
