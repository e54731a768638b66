//! The running configuration, replaceable while mail keeps flowing (SIGHUP).
//!
//! Readers take a snapshot with [`LiveConfig::current`] and keep it for one unit of work: an
//! SMTP session for its whole life, the pipeline for one message, the scheduler for one tick.
//! [`LiveConfig::replace`] swaps in a new configuration for the next snapshot; nobody sees a
//! half-applied file.
//!
//! Some keys are bound at start-up (sockets, TLS files, the store, the size of the SMTP
//! session pool, the recorder API's credentials). A new file that changes them is still
//! applied for everything else; those keys keep their running values, and `replace` says
//! which ones need a restart.

use std::sync::{Arc, RwLock};

use super::Config;

/// A shared handle on the configuration in force. Cloning shares the same configuration.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Swapped whole by `replace`; a lock held only to clone or swap the `Arc`.
    current: Arc<RwLock<Arc<Config>>>,
}

impl LiveConfig {
    pub fn new(config: Config) -> LiveConfig {
        LiveConfig::from(Arc::new(config))
    }

    /// The configuration in force now. Keep the snapshot for one unit of work.
    pub fn current(&self) -> Arc<Config> {
        // A panic while holding the lock cannot leave a half-written Arc: take it as it is.
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Puts `new` in force, except the keys bound at start-up, which keep their running
    /// values. Returns the names of those keys whose value in `new` differs (restart needed).
    pub fn replace(&self, mut new: Config) -> Vec<&'static str> {
        let mut current = self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let restart_needed = keep_startup_keys(&current, &mut new);
        *current = Arc::new(new);
        restart_needed
    }
}

impl From<Arc<Config>> for LiveConfig {
    fn from(config: Arc<Config>) -> LiveConfig {
        LiveConfig { current: Arc::new(RwLock::new(config)) }
    }
}

impl From<Config> for LiveConfig {
    fn from(config: Config) -> LiveConfig {
        LiveConfig::new(config)
    }
}

/// Copies the keys read only at start-up from `running` into `new`; names those that differed.
fn keep_startup_keys(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($name:literal => $($field:ident).+),+ $(,)?) => {$(
            if new.$($field).+ != running.$($field).+ {
                changed.push($name);
                new.$($field).+ = running.$($field).+.clone();
            }
        )+};
    }
    keep! {
        "server.smtp_listen" => server.smtp_listen,
        "server.http_listen" => server.http_listen,
        "server.tls_cert" => server.tls_cert,
        "server.tls_key" => server.tls_key,
        "store.url" => store.url,
        "smtp.max_sessions" => smtp.max_sessions,
    }
    // The recorder API hashes its tokens once; compare what a recorder would notice.
    let recorders = |c: &Config| serde_json::to_value(&c.recorders).ok();
    let secrets = |c: &Config| c.recorders.tokens.iter().map(|t| t.secret().map(str::to_owned)).collect::<Vec<_>>();
    if recorders(new) != recorders(running) || secrets(new) != secrets(running) {
        changed.push("recorders");
        new.recorders = running.recorders.clone();
    }
    // The reply sender is started (or not) with its relay at start-up; queueing follows it.
    let notify = |c: &Config| (serde_json::to_value(&c.notify).ok(), c.notify.password.clone());
    if notify(new) != notify(running) {
        changed.push("notify");
        new.notify = running.notify.clone();
    }
    // The IMAP watchers are started with their mailboxes and `[imap]` timings.
    let imap = |c: &Config| {
        let mailboxes: Vec<_> = c
            .tenants
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    serde_json::to_value(&t.mailboxes).ok(),
                    t.mailboxes.iter().map(|m| m.secret().map(str::to_owned)).collect::<Vec<_>>(),
                )
            })
            .collect();
        (serde_json::to_value(&c.imap).ok(), mailboxes)
    };
    if imap(new) != imap(running) {
        changed.push("imap");
        new.imap = running.imap.clone();
        for t in &mut new.tenants {
            t.mailboxes =
                running.tenants.iter().find(|r| r.id == t.id).map(|r| r.mailboxes.clone()).unwrap_or_default();
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let base = "[[tenants]]\nid = \"acme\"\nassistant_addresses = [\"acme@assistant.example.com\"]\n";
        Config::from_toml(&format!("{text}\n{base}")).expect("valid config")
    }

    #[test]
    fn replace_applies_the_new_file_for_the_next_snapshot() {
        let live = LiveConfig::new(config("[scheduling]\nhorizon_days = 30"));
        let before = live.current();
        let restart = live.replace(config("[scheduling]\nhorizon_days = 7"));
        assert!(restart.is_empty(), "{restart:?}");
        assert_eq!(live.current().scheduling.horizon_days, 7);
        assert_eq!(before.scheduling.horizon_days, 30, "a snapshot taken before keeps its values");
    }

    #[test]
    fn startup_keys_keep_their_running_values_and_are_named() {
        let live = LiveConfig::new(config("[server]\nsmtp_listen = \"127.0.0.1:2525\"\n[smtp]\nmax_sessions = 10"));
        let restart = live.replace(config(
            "[server]\nsmtp_listen = \"127.0.0.1:2526\"\n[smtp]\nmax_sessions = 20\nmax_recipients = 5\n\
             [store]\nurl = \"sqlite://other.db\"\n\
             [[recorders.tokens]]\nname = \"bot\"\ntoken = \"0123456789abcdef0\"",
        ));
        assert_eq!(restart, ["server.smtp_listen", "store.url", "smtp.max_sessions", "recorders"]);
        let now = live.current();
        assert_eq!(now.server.smtp_listen, "127.0.0.1:2525");
        assert_eq!(now.store.url, "sqlite://data/invited.db");
        assert_eq!(now.smtp.max_sessions, 10);
        assert!(now.recorders.tokens.is_empty());
        assert_eq!(now.smtp.max_recipients, 5, "the rest of the file is applied");
    }

    #[test]
    fn the_reply_relay_is_bound_at_startup() {
        let live = LiveConfig::new(config(""));
        let restart = live.replace(config("[notify]\nenabled = true\nrelay_host = \"smtp.acme.com\""));
        assert_eq!(restart, ["notify"]);
        assert!(!live.current().notify.enabled, "no reply is queued that no sender would send");
    }

    #[test]
    fn imap_mailboxes_and_timings_need_a_restart() {
        let mailbox = |folder: &str| {
            format!(
                "[[tenants]]\nid = \"acme\"\nassistant_addresses = [\"acme@assistant.example.com\"]\n\
                 [[tenants.mailboxes]]\nhost = \"imap.acme.com\"\nusername = \"a@acme.com\"\npassword = \"pw\"\n\
                 folder = \"{folder}\"\n"
            )
        };
        let live = LiveConfig::new(Config::from_toml(&mailbox("INBOX")).expect("valid"));
        let restart = live.replace(Config::from_toml(&mailbox("Invites")).expect("valid"));
        assert_eq!(restart, ["imap"]);
        assert_eq!(live.current().tenants[0].mailboxes[0].folder, "INBOX", "the watched folder stays");
        let restart = live
            .replace(Config::from_toml(&format!("[imap]\npoll_seconds = 60\n{}", mailbox("INBOX"))).expect("valid"));
        assert_eq!(restart, ["imap"]);
        assert_eq!(live.current().imap.poll_seconds, 120);
    }
}
