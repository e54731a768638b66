//! Loop and backscatter protection (RFC 3834): which mails never get a reply. Pure.

use mail_parser::Message;

use crate::config::Config;
use crate::eligibility::Requester;
pub use crate::model::ReplyHeaders;

/// Most ids carried over into a reply's References (RFC 5322 §3.6.4 lets a long chain be
/// trimmed from the front).
pub const MAX_REFERENCES: usize = 20;

/// Longest message id carried over; a longer one is hostile or broken and is dropped.
const MAX_ID_BYTES: usize = 250;

/// Reads the top-level headers of `msg`, as the MIME walk parsed them. Never fails:
/// missing headers stay `None`.
pub(crate) fn read_reply_headers(msg: &Message<'_>) -> ReplyHeaders {
    let mut out = ReplyHeaders::default();
    for h in msg.headers() {
        let name = h.name.as_str();
        let value = || crate::mime::unfolded_value(msg, h);
        if name.eq_ignore_ascii_case("auto-submitted") && out.auto_submitted.is_none() {
            out.auto_submitted = Some(keyword(&value()));
        } else if name.eq_ignore_ascii_case("precedence") && out.precedence.is_none() {
            out.precedence = Some(keyword(&value()));
        } else if (name.eq_ignore_ascii_case("list-id") || name.to_ascii_lowercase().starts_with("list-"))
            && out.list_header.is_none()
        {
            out.list_header = Some(name.to_string());
        } else if name.eq_ignore_ascii_case("return-path") {
            out.null_return_path |= value().trim() == "<>";
        } else if name.eq_ignore_ascii_case("references") && out.references.is_empty() {
            out.references = message_ids(&value());
        }
    }
    out
}

/// `Auto-Replied (comment); x=y` → `auto-replied`.
fn keyword(value: &str) -> String {
    let end = value.find([';', '(', ' ', '\t']).unwrap_or(value.len());
    value[..end].trim().to_ascii_lowercase()
}

/// Every `<id>` of a References value, the last [`MAX_REFERENCES`] of them.
fn message_ids(value: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(len) = rest[open..].find('>') else { break };
        let id = &rest[open..=open + len];
        if let Some(id) = bracketed(&id[1..id.len() - 1]) {
            ids.push(id);
        }
        rest = &rest[open + len + 1..];
    }
    let skip = ids.len().saturating_sub(MAX_REFERENCES);
    ids.split_off(skip)
}

/// `<id>` for a Message-ID kept without brackets, when it is fit to repeat in a header:
/// printable ASCII without brackets, at most [`MAX_ID_BYTES`].
pub fn bracketed(id: &str) -> Option<String> {
    let id = id.trim();
    let fit = !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    fit.then(|| format!("<{id}>"))
}

/// Why no reply is sent; each is the `reason` of a `reply_skipped` log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// `[notify] enabled = false`.
    NotifyDisabled,
    /// The tenant has `replies = false`.
    TenantRepliesOff,
    /// No requester: nobody of the tenant to tell.
    NoRequester,
    /// The requester did not pass sender authentication: a reply could go to a forged address.
    UnauthenticatedSender,
    /// `Auto-Submitted` other than `no`: an automatic mail.
    AutoSubmitted,
    /// `Precedence: bulk`, `list` or `junk`.
    BulkPrecedence,
    /// A `List-Id` or other `List-*` header.
    MailingList,
    /// The null envelope sender (`MAIL FROM:<>`) or `Return-Path: <>`: a bounce.
    NullSender,
    /// The requester, the From or the envelope sender is an assistant address.
    OwnAddress,
    /// The arriving version is a REPLY, COUNTER or REFRESH: it changes nothing.
    NotARequest,
}

impl SkipReason {
    pub fn code(self) -> &'static str {
        match self {
            SkipReason::NotifyDisabled => "notify_disabled",
            SkipReason::TenantRepliesOff => "tenant_replies_off",
            SkipReason::NoRequester => "no_requester",
            SkipReason::UnauthenticatedSender => "unauthenticated_sender",
            SkipReason::AutoSubmitted => "auto_submitted",
            SkipReason::BulkPrecedence => "bulk_precedence",
            SkipReason::MailingList => "mailing_list",
            SkipReason::NullSender => "null_sender",
            SkipReason::OwnAddress => "own_address",
            SkipReason::NotARequest => "not_a_request",
        }
    }
}

/// Who the mail came from, as the loop rules need it.
pub struct Origin<'a> {
    pub headers: &'a ReplyHeaders,
    /// MAIL FROM, when the mail came by SMTP (`""`: the null sender).
    pub envelope_from: Option<&'a str>,
    /// The header From address.
    pub from: Option<&'a str>,
}

/// The rules of RFC 3834 §2 and the list, in order; the first that holds is why no
/// reply goes out. Whether the outcome changed is decided later, in the store.
pub fn check_mail(config: &Config, origin: &Origin, requester: Option<&Requester>) -> Result<(), SkipReason> {
    let Some(requester) = requester else { return Err(SkipReason::NoRequester) };
    if !requester.authenticated {
        return Err(SkipReason::UnauthenticatedSender);
    }
    let h = origin.headers;
    if h.auto_submitted.as_deref().is_some_and(|v| v != "no") {
        return Err(SkipReason::AutoSubmitted);
    }
    if h.precedence.as_deref().is_some_and(|p| matches!(p, "bulk" | "list" | "junk")) {
        return Err(SkipReason::BulkPrecedence);
    }
    if h.list_header.is_some() {
        return Err(SkipReason::MailingList);
    }
    if h.null_return_path || origin.envelope_from.is_some_and(|f| f.trim().is_empty() || f.trim() == "<>") {
        return Err(SkipReason::NullSender);
    }
    let own = |a: &str| config.tenant_for_address(a).is_some();
    if own(&requester.email) || origin.from.is_some_and(own) || origin.envelope_from.is_some_and(own) {
        return Err(SkipReason::OwnAddress);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_headers_the_rules_need() {
        let raw = b"From: a@b.example\r\nAuto-Submitted: Auto-Replied (vacation)\r\nPrecedence: Bulk\r\n\
List-Unsubscribe: <mailto:x@y>\r\nReturn-Path: <>\r\nReferences: <a@x>\r\n <b@y> junk <c d>\r\n\r\nbody";
        let msg = mail_parser::MessageParser::new().parse_headers(raw).expect("headers");
        let h = read_reply_headers(&msg);
        assert_eq!(h.auto_submitted.as_deref(), Some("auto-replied"));
        assert_eq!(h.precedence.as_deref(), Some("bulk"));
        assert_eq!(h.list_header.as_deref(), Some("List-Unsubscribe"));
        assert!(h.null_return_path);
        assert_eq!(h.references, vec!["<a@x>", "<b@y>"]);
    }

    #[test]
    fn keeps_the_last_references_only() {
        let value: String = (0..30).map(|i| format!("<m{i}@x> ")).collect();
        let ids = message_ids(&value);
        assert_eq!(ids.len(), MAX_REFERENCES);
        assert_eq!(ids.first().map(String::as_str), Some("<m10@x>"));
        assert_eq!(bracketed("a b"), None);
        assert_eq!(bracketed("a\u{7f}b"), None);
        assert_eq!(bracketed("é@x"), None);
        assert_eq!(bracketed(&"x".repeat(MAX_ID_BYTES + 1)), None);
        assert_eq!(bracketed("id@x").as_deref(), Some("<id@x>"));
    }
}
