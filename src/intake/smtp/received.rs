//! The `Received:` header (RFC 5321 §4.4) prepended to the stored copy. Pure.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

/// What the header records about one accepted message.
pub struct Trace<'a> {
    /// The name the client gave in EHLO/HELO.
    pub helo: &'a str,
    pub peer: IpAddr,
    /// Our name (`server.hostname`).
    pub by: &'a str,
    /// `SMTP` (HELO), `ESMTP` (EHLO) or `ESMTPS` (EHLO over TLS).
    pub protocol: &'static str,
    pub id: &'a str,
    /// The envelope recipients; named in `for` only when there is exactly one.
    pub rcpts: &'a [String],
    pub date: DateTime<Utc>,
}

/// The header, folded, ending in CRLF.
pub fn received_header(t: &Trace) -> String {
    let peer = match t.peer {
        IpAddr::V4(ip) => format!("[{ip}]"),
        IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
    };
    let helo = clean(t.helo);
    let helo = if helo.is_empty() { "unknown".to_string() } else { helo };
    let mut h =
        format!("Received: from {helo} ({peer})\r\n\tby {} with {} id {}", clean(t.by), t.protocol, clean(t.id));
    if let [rcpt] = t.rcpts {
        h.push_str(&format!("\r\n\tfor <{}>", clean(rcpt)));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", t.date.format("%a, %d %b %Y %H:%M:%S +0000")));
    h
}

/// The HELO name and client address from a header [`received_header`] wrote, at the very
/// top of `raw`. Only meaningful for a copy our SMTP intake stored: anywhere else the top
/// header may have been written by anyone.
pub fn client_of(raw: &[u8]) -> Option<(String, IpAddr)> {
    let first_line = raw.split(|&b| b == b'\r').next()?;
    let rest = std::str::from_utf8(first_line).ok()?.strip_prefix("Received: from ")?;
    // `clean` leaves no space or parenthesis in the HELO name, so the first " (" ends it.
    let (helo, peer) = rest.split_once(" (")?;
    let peer = peer.strip_prefix('[')?.strip_suffix("])")?;
    let ip = peer.strip_prefix("IPv6:").unwrap_or(peer).parse().ok()?;
    Some((helo.to_string(), ip))
}

/// Client-given text made safe for a header: printable, no spaces, at most 255 characters.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control() && !c.is_whitespace() && *c != '(' && *c != ')').take(255).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_helo_peer_host_protocol_id_rcpt_and_date() {
        let date = DateTime::parse_from_rfc3339("2027-01-04T12:00:00Z").map(|d| d.with_timezone(&Utc));
        let rcpts = vec!["acme@assistant.example.com".to_string()];
        let h = received_header(&Trace {
            helo: "client.example.org\r\nX-Evil: 1",
            peer: "192.0.2.7".parse().expect("ip"),
            by: "assistant.example.com",
            protocol: "ESMTPS",
            id: "7.1",
            rcpts: &rcpts,
            date: date.expect("date"),
        });
        assert_eq!(
            h,
            "Received: from client.example.orgX-Evil:1 ([192.0.2.7])\r\n\tby assistant.example.com with ESMTPS id 7.1\r\n\
             \tfor <acme@assistant.example.com>;\r\n\tMon, 04 Jan 2027 12:00:00 +0000\r\n"
        );
    }

    #[test]
    fn client_is_read_back_from_our_own_header_only() {
        let date = DateTime::parse_from_rfc3339("2027-01-04T12:00:00Z").map(|d| d.with_timezone(&Utc));
        for (helo, peer, want_helo) in [
            ("mail.acme.com", "192.0.2.7", "mail.acme.com"),
            ("odd (name) here", "2001:db8::1", "oddnamehere"),
            ("", "127.0.0.1", "unknown"),
        ] {
            let h = received_header(&Trace {
                helo,
                peer: peer.parse().expect("ip"),
                by: "mx.test",
                protocol: "ESMTP",
                id: "1.1",
                rcpts: &[],
                date: date.expect("date"),
            });
            let raw = format!("{h}From: a@acme.com\r\n\r\nbody\r\n");
            assert_eq!(client_of(raw.as_bytes()), Some((want_helo.to_string(), peer.parse().expect("ip"))), "{h}");
        }
        for raw in
            ["From: a@acme.com\r\n\r\n", "Received: from x (192.0.2.7)\r\n", "Received: from x ([nonsense])\r\n", ""]
        {
            assert_eq!(client_of(raw.as_bytes()), None, "{raw:?}");
        }
    }
}
