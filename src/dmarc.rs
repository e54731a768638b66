//! `sender_auth = "dmarc"`: the daemon checks DKIM and SPF itself (mail-auth) and believes
//! the From address only on a DMARC-aligned pass (design.md, precise rule 3).
//!
//! - DKIM: the first [`MAX_DKIM_SIGNATURES`] signatures of the stored message, topmost
//!   first (each costs a DNS lookup); any further one is ignored, even one that would pass.
//! - SPF: the SMTP client's IP address, HELO name and MAIL FROM, read back from the
//!   `Received:` header the SMTP intake put on top of its stored copy. Messages from other
//!   sources (`ingest`, IMAP) have no client we saw, so only DKIM can pass for them.
//! - DMARC: the From domain's policy record decides alignment (strict or relaxed). A domain
//!   that publishes no record still needs an aligned pass: a DKIM `d=` or SPF MAIL FROM
//!   domain equal to the From domain, or a parent or subdomain of it.
//!
//! Verification runs while a message is processed, after the `250`, never before it. A DNS
//! failure that could hide a pass is a [`Checked::TempError`]: the message stays stored and
//! unprocessed, and is tried again (see `pipeline::SENDER_AUTH_RETRY_HOURS`). So is a check
//! that takes longer than [`CHECK_TIMEOUT`] in all (slow or silent name servers).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcResult, DnsError, Error, MessageAuthenticator, Parameters,
    RecordSet, ResolverCache, SpfOutput, SpfResult, Txt, MX,
};

use crate::auth::{self, AuthVerdict};

/// What the SMTP intake saw of the client that sent a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpClient {
    pub ip: IpAddr,
    /// The EHLO/HELO name.
    pub helo: String,
    /// MAIL FROM, empty for the null sender `<>`.
    pub mail_from: String,
}

/// The outcome of checking one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    Verdict(AuthVerdict),
    /// A DNS lookup failed in a way that may pass on another try; the text says which.
    TempError(String),
}

/// Most answers kept per record type; beyond it the cache starts afresh.
const CACHE_ENTRIES: usize = 10_000;

/// Most DKIM signatures of one message verified (one DNS lookup each); the rest are ignored.
pub const MAX_DKIM_SIGNATURES: usize = 5;

/// Longest one message's check (DKIM, SPF and DMARC lookups together) may take; past it the
/// check is a [`Checked::TempError`] and the message is tried again later.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// DKIM, SPF and DMARC with a DNS resolver and its answer cache.
pub struct Verifier {
    resolver: MessageAuthenticator,
    /// Our own name (`server.hostname`), which SPF macros may ask for.
    hostname: String,
    txt: Cache<Box<str>, Txt>,
    mx: Cache<Box<str>, RecordSet<MX>>,
    ipv4: Cache<Box<str>, RecordSet<Ipv4Addr>>,
    ipv6: Cache<Box<str>, RecordSet<Ipv6Addr>>,
    ptr: Cache<IpAddr, RecordSet<Box<str>>>,
    /// [`CHECK_TIMEOUT`] unless [set](Verifier::with_check_timeout) otherwise.
    check_timeout: Duration,
}

static SHARED: OnceLock<Result<Verifier, String>> = OnceLock::new();

/// Makes `verifier` the one [`shared`] returns (tests install one with a seeded cache).
/// False when one is already in use.
pub fn install(verifier: Verifier) -> bool {
    SHARED.set(Ok(verifier)).is_ok()
}

/// The process-wide verifier: the installed one, else one using the system's resolvers
/// (`/etc/resolv.conf`). Its error names why no resolver could be set up.
pub fn shared(hostname: &str) -> Result<&'static Verifier, &'static str> {
    SHARED.get_or_init(|| Verifier::system(hostname)).as_ref().map_err(String::as_str)
}

impl Verifier {
    /// Resolves with the system's configuration.
    pub fn system(hostname: &str) -> Result<Verifier, String> {
        let resolver = MessageAuthenticator::new_system_conf()
            .map_err(|e| format!("no DNS resolver for sender_auth = \"dmarc\": {e}"))?;
        Ok(Verifier::with_resolver(resolver, hostname))
    }

    /// Answers only from what is [seeded](Verifier::seed_txt): every other lookup goes to
    /// 127.0.0.1, port 53, once, and fails after a second. For tests, offline.
    pub fn offline(hostname: &str) -> Result<Verifier, String> {
        Verifier::with_name_server(hostname, SocketAddr::from((Ipv4Addr::LOCALHOST, 53)), Duration::from_secs(1))
    }

    /// Asks the one name server at `server` (UDP), once per lookup, waiting `lookup_timeout`.
    pub fn with_name_server(hostname: &str, server: SocketAddr, lookup_timeout: Duration) -> Result<Verifier, String> {
        let mut udp = ConnectionConfig::udp();
        udp.port = server.port();
        let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(server.ip(), true, vec![udp])]);
        let mut opts = ResolverOpts::default();
        opts.timeout = lookup_timeout;
        opts.attempts = 1;
        let resolver = MessageAuthenticator::new(config, opts).map_err(|e| format!("resolver at {server}: {e}"))?;
        Ok(Verifier::with_resolver(resolver, hostname))
    }

    /// Bounds each message's check by `limit` instead of [`CHECK_TIMEOUT`].
    pub fn with_check_timeout(mut self, limit: Duration) -> Verifier {
        self.check_timeout = limit;
        self
    }

    fn with_resolver(resolver: MessageAuthenticator, hostname: &str) -> Verifier {
        Verifier {
            resolver,
            hostname: hostname.to_string(),
            txt: Cache::default(),
            mx: Cache::default(),
            ipv4: Cache::default(),
            ipv6: Cache::default(),
            ptr: Cache::default(),
            check_timeout: CHECK_TIMEOUT,
        }
    }

    /// Puts a TXT answer for `name` (`selector._domainkey.acme.com`, `acme.com`,
    /// `_dmarc.acme.com`) in the cache for a day.
    pub fn seed_txt(&self, name: &str, record: impl Into<Txt>) {
        let day = Instant::now() + Duration::from_secs(86_400);
        self.txt.insert(fqdn(name), record.into(), day);
    }

    /// Caches "no such name" for `name`.
    pub fn seed_nxdomain(&self, name: &str) {
        let nx = mail_auth::hickory_resolver::proto::op::ResponseCode::NXDomain;
        self.seed_txt(name, Txt::Error(Error::Dns(DnsError::RecordNotFound(nx))));
    }

    /// Caches a failed lookup of `name` (a timeout, SERVFAIL), as the resolver reports one.
    pub fn seed_temp_error(&self, name: &str) {
        self.seed_txt(name, Txt::Error(Error::Dns(DnsError::Resolver(format!("SERVFAIL for {name}")))));
    }

    fn params<P>(&self, params: P) -> CachedParameters<'_, P> {
        Parameters::new(params)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }

    /// Checks the stored message `raw`; `client` when it came in over our SMTP intake. A
    /// check that runs past its time limit is a [`Checked::TempError`].
    pub async fn check(&self, raw: &[u8], client: Option<&SmtpClient>) -> Checked {
        match tokio::time::timeout(self.check_timeout, self.check_unbounded(raw, client)).await {
            Ok(checked) => checked,
            Err(_) => Checked::TempError(format!(
                "DKIM, SPF and DMARC lookups timed out after {} s (slow or silent name servers)",
                self.check_timeout.as_secs_f64()
            )),
        }
    }

    async fn check_unbounded(&self, raw: &[u8], client: Option<&SmtpClient>) -> Checked {
        let Some(mut message) = AuthenticatedMessage::parse(raw) else {
            return Checked::Verdict(fail("the message has no readable header block".into()));
        };
        let from_domains: Vec<String> = message.from.iter().filter_map(|f| domain_of(f)).collect();
        let Some(from_domain) = from_domains.first().cloned() else {
            return Checked::Verdict(fail("the message has no From address with a domain".into()));
        };
        if from_domains.iter().any(|d| *d != from_domain) {
            return Checked::Verdict(fail(format!("From names several domains ({})", from_domains.join(", "))));
        }
        message.dkim_headers.truncate(MAX_DKIM_SIGNATURES);
        let dkim = self.resolver.verify_dkim(self.params(&message)).await;
        let (spf, mail_from_domain) = match client {
            Some(c) => {
                let params = SpfParameters::verify(c.ip, &c.helo, &self.hostname, &c.mail_from);
                let domain = domain_of(&c.mail_from).unwrap_or_else(|| c.helo.to_ascii_lowercase());
                (Some(self.resolver.verify_spf(self.params(params)).await), domain)
            }
            None => (None, String::new()),
        };
        let no_spf = SpfOutput::new(String::new());
        let spf_output = spf.as_ref().unwrap_or(&no_spf);
        let dmarc = self
            .resolver
            .verify_dmarc(self.params(DmarcParameters::new(&message, &dkim, &mail_from_domain, spf_output)))
            .await;
        let seen =
            Seen { from_domain: &from_domain, dkim: &dkim, spf: spf.as_ref(), mail_from_domain: &mail_from_domain };
        match dmarc.result() {
            DmarcResult::Pass => {
                let how = if *dmarc.dkim_result() == DmarcResult::Pass { "DKIM" } else { "SPF" };
                Checked::Verdict(pass(format!("dmarc=pass for {from_domain} ({how} aligned)")))
            }
            DmarcResult::TempError(e) => Checked::TempError(format!("dmarc=temperror for {from_domain}: {e}")),
            DmarcResult::Fail(_) | DmarcResult::PermError(_) => match seen.temp_error() {
                Some(e) => Checked::TempError(e),
                None => Checked::Verdict(fail(format!(
                    "dmarc=fail for {from_domain}: no aligned DKIM or SPF pass ({})",
                    seen.summary()
                ))),
            },
            // No DMARC record: alignment is still required, relaxed.
            DmarcResult::None => match (seen.aligned_pass(), seen.temp_error()) {
                (Some(how), _) => Checked::Verdict(pass(format!("{how}; {from_domain} publishes no DMARC record"))),
                (None, Some(e)) => Checked::TempError(e),
                (None, None) => Checked::Verdict(fail(format!(
                    "no aligned DKIM or SPF pass for {from_domain} ({}); it publishes no DMARC record",
                    seen.summary()
                ))),
            },
        }
    }
}

/// mail-auth's lookup parameters with our caches.
type CachedParameters<'x, P> = Parameters<
    'x,
    P,
    Cache<Box<str>, Txt>,
    Cache<Box<str>, RecordSet<MX>>,
    Cache<Box<str>, RecordSet<Ipv4Addr>>,
    Cache<Box<str>, RecordSet<Ipv6Addr>>,
    Cache<IpAddr, RecordSet<Box<str>>>,
>;

/// What DKIM and SPF found, for reasons and for the no-record case.
struct Seen<'a> {
    from_domain: &'a str,
    dkim: &'a [DkimOutput<'a>],
    spf: Option<&'a SpfOutput>,
    mail_from_domain: &'a str,
}

impl Seen<'_> {
    fn aligned_pass(&self) -> Option<String> {
        for d in self.dkim.iter().filter(|d| *d.result() == DkimResult::Pass) {
            let Some(domain) = d.signature().and_then(|s| domain_of(&s.d)) else { continue };
            if auth::aligned(&domain, self.from_domain) {
                return Some(format!("dkim=pass d={domain} aligned with From"));
            }
        }
        let spf_pass = self.spf.is_some_and(|s| s.result() == SpfResult::Pass);
        (spf_pass && auth::aligned(self.mail_from_domain, self.from_domain))
            .then(|| format!("spf=pass {} aligned with From", self.mail_from_domain))
    }

    fn temp_error(&self) -> Option<String> {
        let dkim = self.dkim.iter().find_map(|d| match d.result() {
            DkimResult::TempError(e) => Some(format!("dkim=temperror: {e}")),
            _ => None,
        });
        let spf = self
            .spf
            .filter(|s| s.result() == SpfResult::TempError)
            .map(|s| format!("spf=temperror for {}", s.domain()));
        dkim.or(spf)
    }

    /// `dkim=fail d=evil.example, spf=softfail` for reasons an operator reads.
    fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .dkim
            .iter()
            .map(|d| {
                let domain = d.signature().map(|s| s.d.as_str()).unwrap_or("?");
                format!("dkim={} d={domain}", dkim_word(d.result()))
            })
            .collect();
        if parts.is_empty() {
            parts.push("dkim=none".into());
        }
        match self.spf {
            Some(s) => parts.push(format!("spf={} {}", spf_word(s.result()), self.mail_from_domain)),
            None => parts.push("spf=not checked (not received over SMTP)".into()),
        }
        parts.join(", ")
    }
}

fn dkim_word(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn spf_word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn pass(reason: String) -> AuthVerdict {
    AuthVerdict { authenticated: true, reason }
}

fn fail(reason: String) -> AuthVerdict {
    AuthVerdict { authenticated: false, reason }
}

/// The domain of an address or a bare domain, lowercased, without a trailing dot.
fn domain_of(value: &str) -> Option<String> {
    let domain = value.rsplit('@').next()?.trim().trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty() && domain.contains('.')).then_some(domain)
}

/// The cache key form mail-auth looks names up by: lowercase, ending in a dot.
fn fqdn(name: &str) -> Box<str> {
    let name = name.trim().to_ascii_lowercase();
    if name.ends_with('.') {
        name.into_boxed_str()
    } else {
        format!("{name}.").into_boxed_str()
    }
}

/// A DNS answer cache that honours expiry and holds at most [`CACHE_ENTRIES`] answers.
pub struct Cache<K, V>(Mutex<HashMap<K, (V, Instant)>>);

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Cache(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for Cache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match map.get(name) {
            Some((value, expires)) if *expires > Instant::now() => Some(value.clone()),
            Some(_) => {
                map.remove(name);
                None
            }
            None => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.remove(name).map(|(value, _)| value)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let mut map = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, (value, valid_until));
    }
}
