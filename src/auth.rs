//! Sender authentication from `Authentication-Results` headers (RFC 8601), for tenants with
//! `sender_auth = "authentication-results"`: the receiving MTA already checked DKIM, SPF and
//! DMARC and wrote down what it found; we believe it only when it is an MTA we trust.
//!
//! Pure: header values in, a verdict out. The parser never panics and turns garbage into
//! "no results", because these headers come from the internet.
//!
//! Trust model: every `Authentication-Results` header above the one our trusted MTA added was
//! added after it (by us or nobody); every one below it may have been written by the sender.
//! So only the topmost header carrying a trusted authserv-id counts, and headers with any
//! other authserv-id are ignored wherever they stand.

/// One parsed `Authentication-Results` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResults {
    /// Who wrote the header (`mx.google.com`), as written.
    pub authserv_id: String,
    /// The optional version after the authserv-id (`example.org 1; none`).
    pub version: Option<u32>,
    /// Every `method=result` clause; empty for `none` and for clauses that could not be read.
    pub results: Vec<MethodResult>,
}

/// One `method=result [reason=...] [ptype.property=value ...]` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodResult {
    /// Lowercased, without a `/version` suffix: `dkim`, `spf`, `dmarc`, `compauth`, …
    pub method: String,
    /// Lowercased: `pass`, `fail`, `none`, `temperror`, …
    pub result: String,
    pub reason: Option<String>,
    pub properties: Vec<Property>,
}

/// A `ptype.property=value` pair; `ptype` and `property` lowercased, the value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub ptype: String,
    pub property: String,
    pub value: String,
}

impl MethodResult {
    /// The value of `ptype.property`, first occurrence; names compare case-insensitively.
    pub fn property(&self, ptype: &str, property: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|p| p.ptype.eq_ignore_ascii_case(ptype) && p.property.eq_ignore_ascii_case(property))
            .map(|p| p.value.as_str())
    }
}

/// Whether the From address is believed, and a sentence saying why (for logs and `explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthVerdict {
    pub authenticated: bool,
    pub reason: String,
}

impl AuthVerdict {
    fn pass(reason: String) -> AuthVerdict {
        AuthVerdict { authenticated: true, reason }
    }

    fn fail(reason: String) -> AuthVerdict {
        AuthVerdict { authenticated: false, reason }
    }
}

/// Judges `from` by the topmost `Authentication-Results` header (of `headers`, topmost first)
/// whose authserv-id is in `trusted_authserv_ids`.
///
/// Passes on `dmarc=pass` (for the From domain when `header.from` is given), or `dkim=pass`
/// whose signing domain aligns with the From domain, or `spf=pass` whose MAIL FROM domain
/// aligns. A `dmarc=fail` for the From domain vetoes the others: the verifier, which knows
/// the public-suffix list and the domain's strict/relaxed policy, has said nothing aligned.
pub fn sender_authenticated(headers: &[String], trusted_authserv_ids: &[String], from: &str) -> AuthVerdict {
    let Some(from_domain) = from.rsplit_once('@').and_then(|(_, d)| domain_of(d)) else {
        return AuthVerdict::fail(format!("the From address {from:?} has no domain"));
    };
    let trusted = |id: &str| trusted_authserv_ids.iter().any(|t| t.trim().eq_ignore_ascii_case(id));
    let Some(header) = headers.iter().filter_map(|h| parse(h)).find(|h| trusted(&h.authserv_id)) else {
        return AuthVerdict::fail(format!(
            "no Authentication-Results header from a trusted authserv-id ({})",
            trusted_authserv_ids.join(", ")
        ));
    };
    judge(&header, &from_domain)
}

/// Applies the policy to the one header that counts.
fn judge(header: &AuthResults, from_domain: &str) -> AuthVerdict {
    let id = &header.authserv_id;
    let dmarc_fail =
        header.results.iter().find(|r| r.method == "dmarc" && r.result == "fail" && dmarc_is_for(r, from_domain));
    if dmarc_fail.is_some() {
        return AuthVerdict::fail(format!("{id}: dmarc=fail for {from_domain}"));
    }
    // Preference order only makes the reason predictable; any one pass is enough.
    for method in ["dmarc", "dkim", "spf"] {
        let pass = header.results.iter().filter(|r| r.method == method && r.result == "pass");
        if let Some(reason) = pass.filter_map(|r| pass_reason(r, from_domain)).next() {
            return AuthVerdict::pass(format!("{reason} ({id})"));
        }
    }
    AuthVerdict::fail(format!("{id}: no aligned pass for {from_domain} ({})", summary(header)))
}

/// Why a `pass` result authenticates `from_domain`, or `None` when it is for another domain.
fn pass_reason(r: &MethodResult, from_domain: &str) -> Option<String> {
    match r.method.as_str() {
        "dmarc" if dmarc_is_for(r, from_domain) => Some(match r.property("header", "from") {
            Some(d) => format!("dmarc=pass header.from={d}"),
            None => "dmarc=pass".to_string(),
        }),
        "dkim" => {
            // Gmail writes only `header.i=@domain`; the i= domain is d= or below it (RFC 6376 §3.5).
            let (name, d) = match r.property("header", "d") {
                Some(d) => ("header.d", domain_of(d)?),
                None => ("header.i", domain_of(r.property("header", "i")?)?),
            };
            aligned(&d, from_domain).then(|| format!("dkim=pass {name}={d} aligned with From"))
        }
        "spf" => {
            let d = domain_of(r.property("smtp", "mailfrom")?)?;
            aligned(&d, from_domain).then(|| format!("spf=pass smtp.mailfrom={d} aligned with From"))
        }
        _ => None,
    }
}

/// A DMARC result speaks about the From domain unless its `header.from` names another one.
fn dmarc_is_for(r: &MethodResult, from_domain: &str) -> bool {
    r.property("header", "from").is_none_or(|d| domain_of(d).as_deref() == Some(from_domain))
}

/// `dkim=pass, spf=fail, …` for the failure reason, so an operator sees what the MTA saw.
fn summary(header: &AuthResults) -> String {
    if header.results.is_empty() {
        return "no results".to_string();
    }
    header.results.iter().map(|r| format!("{}={}", r.method, r.result)).collect::<Vec<_>>().join(", ")
}

/// The domain of an address or a bare domain, lowercased, without angle brackets or a
/// trailing root dot. `None` when nothing is left.
fn domain_of(value: &str) -> Option<String> {
    let domain = value.rsplit('@').next()?;
    let domain = domain.trim().trim_matches(|c| c == '<' || c == '>').trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

/// Relaxed alignment without a public-suffix list: equal, or one is a subdomain of the other
/// on a dot boundary. The parent must itself contain a dot, so that a bare TLD (`com`) never
/// aligns with everything below it.
pub(crate) fn aligned(a: &str, b: &str) -> bool {
    a == b || is_subdomain(a, b) || is_subdomain(b, a)
}

fn is_subdomain(child: &str, parent: &str) -> bool {
    parent.contains('.') && child.strip_suffix(parent).is_some_and(|rest| rest.len() > 1 && rest.ends_with('.'))
}

/// Parses one header value (unfolded or not). `None` when it has no readable authserv-id;
/// clauses that cannot be read are skipped.
pub fn parse(value: &str) -> Option<AuthResults> {
    let tokens = tokenize(value);
    let mut clauses = tokens.split(|t| *t == Token::Semi);
    let (authserv_id, version) = parse_head(clauses.next()?)?;
    let results = clauses.filter_map(parse_clause).collect();
    Some(AuthResults { authserv_id, version, results })
}

/// `authserv-id [version]`; anything else (a `key=value`, several words) is not a header we read.
fn parse_head(tokens: &[Token]) -> Option<(String, Option<u32>)> {
    let id = match tokens.first()? {
        Token::Word(w) | Token::Quoted(w) if !w.is_empty() => w.clone(),
        _ => return None,
    };
    match tokens.get(1..)? {
        [] => Some((id, None)),
        [Token::Word(v)] if v.bytes().all(|b| b.is_ascii_digit()) => Some((id, v.parse().ok())),
        _ => None,
    }
}

/// One `method=result [reason=…] [ptype.property=value …]` clause; `none` and garbage give `None`.
fn parse_clause(tokens: &[Token]) -> Option<MethodResult> {
    let mut pairs = key_values(tokens).into_iter();
    let (method, result) = pairs.next()?;
    let method = method.split('/').next().unwrap_or_default().trim().to_ascii_lowercase();
    if method.is_empty() || method.contains('.') || result.is_empty() {
        return None;
    }
    let mut out = MethodResult { method, result: result.to_ascii_lowercase(), reason: None, properties: vec![] };
    for (key, value) in pairs {
        if key.eq_ignore_ascii_case("reason") {
            out.reason.get_or_insert(value);
        } else if let Some((ptype, property)) = key.split_once('.') {
            let (ptype, property) = (ptype.to_ascii_lowercase(), property.to_ascii_lowercase());
            out.properties.push(Property { ptype, property, value });
        }
        // Other keys (Microsoft's `action=none`) carry nothing the policy uses.
    }
    Some(out)
}

/// The `key=value` pairs of a clause, in order. A key split by comments or spaces around its
/// dot (`header . d`) is joined again; stray words before a key are dropped.
fn key_values(tokens: &[Token]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut key = String::new();
    let mut it = tokens.iter().peekable();
    while let Some(token) = it.next() {
        match token {
            Token::Word(w) | Token::Quoted(w) => {
                if !(key.is_empty() || key.ends_with('.') || w.starts_with('.')) {
                    key.clear();
                }
                key.push_str(w);
            }
            Token::Equals if key.is_empty() => {}
            Token::Equals => {
                let mut value = String::new();
                if let Some(Token::Word(v) | Token::Quoted(v)) = it.peek() {
                    value.push_str(v);
                    it.next();
                    // `"quoted local part"@domain` arrives as a quoted string and a word.
                    if let Some(Token::Word(d)) = it.peek().filter(|_| !value.contains('@')) {
                        if d.starts_with('@') {
                            value.push_str(d);
                            it.next();
                        }
                    }
                }
                pairs.push((std::mem::take(&mut key), value));
            }
            Token::Semi => {}
        }
    }
    pairs
}

/// The lexical pieces of a header value once comments and folding whitespace are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Semi,
    Equals,
}

/// Splits a value into words, quoted strings, `;` and `=`, dropping CFWS (RFC 5322 §3.2.2).
/// An unterminated comment or quoted string simply runs to the end.
fn tokenize(value: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '(' => skip_comment(&mut chars),
            '"' => tokens.push(Token::Quoted(quoted_string(&mut chars))),
            ';' => tokens.push(Token::Semi),
            '=' => tokens.push(Token::Equals),
            c if is_word_char(c) => {
                let mut word = String::from(c);
                while let Some(&n) = chars.peek().filter(|&&n| is_word_char(n)) {
                    word.push(n);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
            _ => {} // whitespace, a stray `)`
        }
    }
    tokens
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | ';' | '=' | '"')
}

/// Skips a comment whose `(` was just read; comments nest and `\` quotes the next character.
fn skip_comment(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    let mut depth = 1usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// Reads a quoted string whose `"` was just read, undoing `\` quoting.
fn quoted_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '"' => break,
            '\r' | '\n' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GMAIL: &str = "mx.google.com; dkim=pass header.i=@acme.com header.s=s1 header.b=abc; \
        spf=pass (google.com: domain of x@acme.com designates 1.2.3.4 as permitted sender) \
        smtp.mailfrom=x@acme.com; dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=acme.com";
    const MICROSOFT: &str = "spf=pass (sender IP is 1.2.3.4) smtp.mailfrom=acme.com; dkim=pass \
        (signature was verified) header.d=acme.com;dmarc=pass action=none header.from=acme.com;compauth=pass reason=100";

    /// `method=result` of every clause, and the authserv-id.
    fn shape(value: &str) -> Option<(String, Vec<String>)> {
        let h = parse(value)?;
        Some((h.authserv_id, h.results.iter().map(|r| format!("{}={}", r.method, r.result)).collect()))
    }

    #[test]
    fn parses_real_world_shapes() {
        type Shape<'a> = Option<(&'a str, &'a [&'a str])>;
        let cases: [(&str, Shape); 12] = [
            (GMAIL, Some(("mx.google.com", &["dkim=pass", "spf=pass", "dmarc=pass"]))),
            ("", None),
            ("example.org 1; none", Some(("example.org", &[]))),
            ("example.org; none", Some(("example.org", &[]))),
            (
                "(c0) mx.acme.com (c1 (nested; x=y)) ; (c2) DKIM (c3) = (c4) PASS (c5) header (c6) . (c7) d (c8) = (c9) acme.com (c10)",
                Some(("mx.acme.com", &["dkim=pass"])),
            ),
            ("mx.acme.com;\r\n\tspf=fail\r\n smtp.mailfrom=x@evil.example", Some(("mx.acme.com", &["spf=fail"]))),
            ("\"mx.acme.com\"; dkim/1=neutral reason=\"bad; sig\" header.d=acme.com", Some(("mx.acme.com", &["dkim=neutral"]))),
            ("garbage without structure", None),
            ("dkim=pass header.d=acme.com", None),
            (";;;==((", None),
            ("mx.acme.com; ===; dkim; x.y=; =pass; spf=pass", Some(("mx.acme.com", &["spf=pass"]))),
            ("mx.acme.com; dkim=pass (unterminated comment header.d=acme.com", Some(("mx.acme.com", &["dkim=pass"]))),
        ];
        for (value, want) in cases {
            let want = want.map(|(id, r)| (id.to_string(), r.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
            assert_eq!(shape(value), want, "{value:?}");
        }
        let ms = format!("mx.acme.com; {MICROSOFT}");
        let (_, results) = shape(&ms).expect("microsoft parses");
        assert_eq!(results, ["spf=pass", "dkim=pass", "dmarc=pass", "compauth=pass"]);
    }

    #[test]
    fn reads_properties_reason_and_version() {
        let h = parse(GMAIL).expect("gmail");
        assert_eq!(h.results[0].property("header", "i"), Some("@acme.com"));
        assert_eq!(h.results[1].property("SMTP", "MailFrom"), Some("x@acme.com"));
        assert_eq!(h.results[2].property("header", "from"), Some("acme.com"));
        let h = parse(&format!("mx.acme.com; {MICROSOFT}")).expect("microsoft");
        assert_eq!(h.results[3].reason.as_deref(), Some("100"));
        assert_eq!(h.results[1].property("header", "d"), Some("acme.com"));
        let h = parse("example.org 1; none").expect("none");
        assert_eq!(h.version, Some(1));
        let h = parse("mx; spf=pass smtp.helo=mail.acme.com policy.iprev=1.2.3.4 smtp.mailfrom=\"a b\"@acme.com")
            .expect("quoted local part");
        assert_eq!(h.results[0].property("smtp", "helo"), Some("mail.acme.com"));
        assert_eq!(h.results[0].property("policy", "iprev"), Some("1.2.3.4"));
        assert_eq!(h.results[0].property("smtp", "mailfrom"), Some("a b@acme.com"));
        let h = parse("mx; dkim=fail reason=\"signature \\\"bad\\\"\"").expect("escaped quote");
        assert_eq!(h.results[0].reason.as_deref(), Some("signature \"bad\""));
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        for value in [
            "(",
            ")",
            "\"",
            "\\",
            "(\\",
            "\"\\",
            "x;=;=",
            "é; dkim=pässé",
            "x; a.b.c=d.e@@f",
            "x; dkim=pass header.d=@",
        ] {
            let _ = parse(value);
            let _ = sender_authenticated(&[value.to_string()], &["x".to_string()], "a@acme.com");
        }
        // Every string of up to five characters over the characters the grammar cares about.
        let alphabet: Vec<char> = "x;=(\\)\"@. ".chars().collect();
        let mut values = vec![String::new()];
        for _ in 0..5 {
            values = values.iter().flat_map(|v| alphabet.iter().map(move |c| format!("{v}{c}"))).collect();
            for v in &values {
                let _ = parse(v);
                let _ = sender_authenticated(std::slice::from_ref(v), &["x".to_string()], v);
            }
        }
    }

    fn verdict(headers: &[&str], from: &str) -> AuthVerdict {
        let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        sender_authenticated(&headers, &["MX.acme.com".to_string()], from)
    }

    #[test]
    fn policy() {
        let t = "mx.acme.com";
        let cases: [(&str, Vec<String>, &str, bool, &str); 16] = [
            (
                "gmail shape",
                vec![GMAIL.replacen("mx.google.com", t, 1)],
                "x@acme.com",
                true,
                "dmarc=pass header.from=acme.com",
            ),
            ("microsoft shape", vec![format!("{t}; {MICROSOFT}")], "x@acme.com", true, "dmarc=pass"),
            (
                "dkim aligned",
                vec![format!("{t}; dkim=pass header.d=acme.com")],
                "x@acme.com",
                true,
                "dkim=pass header.d=acme.com aligned with From",
            ),
            (
                "dkim subdomain",
                vec![format!("{t}; dkim=pass header.d=mail.acme.com")],
                "x@acme.com",
                true,
                "header.d=mail.acme.com aligned",
            ),
            ("from subdomain", vec![format!("{t}; dkim=pass header.d=acme.com")], "x@eu.acme.com", true, "aligned"),
            (
                "dkim misaligned",
                vec![format!("{t}; dkim=pass header.d=evil.example")],
                "x@acme.com",
                false,
                "no aligned pass",
            ),
            (
                "dkim suffix not on a dot",
                vec![format!("{t}; dkim=pass header.d=notacme.com")],
                "x@acme.com",
                false,
                "no aligned pass",
            ),
            ("dkim bare tld", vec![format!("{t}; dkim=pass header.d=com")], "x@acme.com", false, "no aligned pass"),
            (
                "spf aligned",
                vec![format!("{t}; spf=pass smtp.mailfrom=bounce@acme.com")],
                "x@acme.com",
                true,
                "spf=pass smtp.mailfrom=acme.com",
            ),
            (
                "spf other domain",
                vec![format!("{t}; spf=pass smtp.mailfrom=x@evil.example")],
                "x@acme.com",
                false,
                "spf=pass",
            ),
            (
                "dmarc fail vetoes",
                vec![format!("{t}; dkim=pass header.d=acme.com; dmarc=fail header.from=acme.com")],
                "x@acme.com",
                false,
                "dmarc=fail",
            ),
            (
                "dmarc none",
                vec![format!("{t}; dkim=fail header.d=acme.com; dmarc=none header.from=acme.com")],
                "x@acme.com",
                false,
                "dmarc=none",
            ),
            (
                "dmarc pass other from",
                vec![format!("{t}; dmarc=pass header.from=evil.example")],
                "x@acme.com",
                false,
                "no aligned pass",
            ),
            (
                "temperror",
                vec![format!("{t}; dkim=temperror header.d=acme.com; spf=temperror smtp.mailfrom=acme.com")],
                "x@acme.com",
                false,
                "temperror",
            ),
            ("none", vec![format!("{t} 1; none")], "x@acme.com", false, "no results"),
            (
                "no header",
                vec![],
                "x@acme.com",
                false,
                "no Authentication-Results header from a trusted authserv-id (MX.acme.com)",
            ),
        ];
        for (name, headers, from, ok, reason) in cases {
            let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
            let v = verdict(&refs, from);
            assert_eq!(v.authenticated, ok, "{name}: {v:?}");
            assert!(v.reason.contains(reason), "{name}: {:?} lacks {reason:?}", v.reason);
        }
    }

    #[test]
    fn only_the_topmost_trusted_header_counts() {
        let pass = "mx.acme.com; dkim=pass header.d=acme.com";
        let fail = "mx.acme.com; dkim=fail header.d=acme.com";
        let forged = "evil.example; dmarc=pass header.from=acme.com";
        // the topmost trusted header wins; a pass below it was written before our MX saw the mail
        assert!(!verdict(&[fail, pass], "x@acme.com").authenticated);
        assert!(verdict(&[pass, fail], "x@acme.com").authenticated);
        // untrusted headers are ignored even on top
        assert!(!verdict(&[forged, fail], "x@acme.com").authenticated);
        assert!(!verdict(&[forged], "x@acme.com").authenticated);
        assert!(verdict(&[forged, "garbage", pass], "x@acme.com").authenticated);
        // the trusted id compares case-insensitively, and a forged id is not a prefix match
        assert!(verdict(&["MX.ACME.COM; dkim=pass header.d=acme.com"], "x@acme.com").authenticated);
        assert!(!verdict(&["mx.acme.com.evil.example; dkim=pass header.d=acme.com"], "x@acme.com").authenticated);
        // a From without a domain is never authenticated
        assert!(!verdict(&[pass], "acme.com").authenticated);
        assert!(!verdict(&[pass], "x@").authenticated);
    }
}
