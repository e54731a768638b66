//! Header facts of the outer message: who sent it, to whom, and what the
//! receiving servers said about its authentication.

use std::borrow::Cow;

use mail_parser::parsers::MessageStream;
use mail_parser::{Address, Header, HeaderName, HeaderValue, Message};

use crate::model::Extracted;

/// Headers other than To and Cc that name the mailbox a copy was delivered to;
/// with forwarding they are often the only place the assistant address shows.
const DELIVERY_HEADERS: [&str; 2] = ["delivered-to", "x-original-to"];

/// Fills the header fields of `out` from the top-level headers of `msg`.
pub(super) fn read_header_facts(msg: &Message<'_>, out: &mut Extracted) {
    out.message_id = message_id(msg);
    out.subject = msg.subject().map(str::to_owned);
    out.from = msg.from().and_then(first_address);
    out.sender = msg.sender().and_then(first_address);
    out.header_recipients = recipients(msg);
    out.authentication_results = authentication_results(msg);
    out.reply_headers = crate::notify::guard::read_reply_headers(msg);
}

/// `Message-ID` without angle brackets; the raw value when it does not parse
/// as an id, so that logs can still name the message.
fn message_id(msg: &Message<'_>) -> Option<String> {
    let parsed = msg.message_id().map(str::trim).filter(|id| !id.is_empty());
    let raw = || {
        let header = msg.headers().iter().find(|h| h.name == HeaderName::MessageId)?;
        let value = raw_value(msg, header);
        let id = value.trim().trim_start_matches('<').trim_end_matches('>').trim();
        (!id.is_empty()).then(|| id.to_owned())
    };
    parsed.map(str::to_owned).or_else(raw)
}

fn first_address(address: &Address<'_>) -> Option<String> {
    address.iter().find_map(lowercase_address)
}

fn lowercase_address(addr: &mail_parser::Addr<'_>) -> Option<String> {
    let address = addr.address()?.trim();
    (!address.is_empty()).then(|| address.to_lowercase())
}

/// To, Cc, Delivered-To and X-Original-To addresses, in that order, each once.
fn recipients(msg: &Message<'_>) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    let to_cc = msg.all_to().chain(msg.all_cc());
    let mut push = |addr: &mail_parser::Addr<'_>| {
        if let Some(address) = lowercase_address(addr) {
            if !all.contains(&address) {
                all.push(address);
            }
        }
    };
    to_cc.flat_map(|a| a.iter()).for_each(&mut push);
    for name in DELIVERY_HEADERS {
        for header in msg.headers().iter().filter(|h| h.name.as_str().eq_ignore_ascii_case(name)) {
            if let Some(address) = parse_address(msg, header) {
                address.iter().for_each(&mut push);
            }
        }
    }
    all
}

/// mail-parser keeps unknown headers as raw text; read them as addresses here.
fn parse_address<'m>(msg: &'m Message<'_>, header: &Header<'_>) -> Option<Address<'m>> {
    let bytes = msg.raw_message.get(header.offset_start as usize..header.offset_end as usize)?;
    match MessageStream::new(bytes).parse_address() {
        HeaderValue::Address(address) => Some(address),
        _ => None,
    }
}

/// Every `Authentication-Results` value, topmost (the receiving server's) first,
/// unfolded but otherwise as written: the auth layer parses them.
fn authentication_results(msg: &Message<'_>) -> Vec<String> {
    msg.headers()
        .iter()
        .filter(|h| h.name == HeaderName::AuthenticationResults)
        .map(|h| unfolded_value(msg, h))
        .filter(|v| !v.is_empty())
        .collect()
}

/// A header's value as written, unfolded and trimmed.
pub(crate) fn unfolded_value(msg: &Message<'_>, header: &Header<'_>) -> String {
    unfold(&raw_value(msg, header))
}

fn raw_value<'m>(msg: &'m Message<'_>, header: &Header<'_>) -> Cow<'m, str> {
    let bytes = msg.raw_message.get(header.offset_start as usize..header.offset_end as usize);
    String::from_utf8_lossy(bytes.unwrap_or_default())
}

/// Joins folded header lines (RFC 5322 §2.2.3) and trims the value.
fn unfold(value: &str) -> String {
    value.split(['\r', '\n']).filter(|line| !line.is_empty()).collect::<Vec<_>>().join("").trim().to_owned()
}
