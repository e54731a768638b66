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

/// Picks the event's conference: the first consent link under `consent_base`, else the
/// first recognised join link. Links keep the order the ICS reader found them in.
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

/// The provider of a raw join link, if it is one the recorders can join.
fn join_link_provider(url: &Url) -> Option<Provider> {
    if !matches!(url.scheme(), "https" | "http") {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    let path = url.path();
    let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    if under("zoom.us") || under("zoom.com") || under("zoomgov.com") {
        let meeting = ["/j/", "/w/", "/my/", "/s/", "/wc/", "/webinar/"].iter().any(|p| path.starts_with(p));
        return meeting.then_some(Provider::Zoom);
    }
    if host == "meet.google.com" {
        let code = path.trim_matches('/');
        return (!code.is_empty() && code.contains('-')).then_some(Provider::GoogleMeet);
    }
    if host == "teams.microsoft.com" || host == "teams.live.com" || host == "teams.microsoft.us" {
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
