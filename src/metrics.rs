//! Metrics for `/metrics` (Prometheus text format), all named here and nowhere else.
//!
//! Callers use the small functions below, never the `metrics` macros, so that every name,
//! label and unit is listed once (and in the README, "Metrics"). Labels take values from
//! bounded sets only: sources, outcomes, reply codes, reason codes, job kinds, configured
//! mailbox names. Never an address, a UID, a message id or free text.
//!
//! Until [`install`] runs (in `serve`), the functions record nothing and cost next to nothing.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets, in seconds: from a fast store write to a message resumed minutes later.
const BUCKETS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle). `None`
/// when another recorder was installed first: metrics are then not served.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets(&BUCKETS).ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

/// The exposition for one scrape.
pub fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    handle.render()
}

fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("invited_messages_received_total", "Messages offered to an intake, by source and outcome");
    describe_counter!("invited_smtp_sessions_total", "SMTP sessions accepted");
    describe_gauge!("invited_smtp_sessions_active", "SMTP sessions open now");
    describe_counter!("invited_smtp_replies_total", "SMTP replies sent, by reply code");
    describe_counter!("invited_decisions_total", "Decisions taken for an event, by eligibility");
    describe_counter!("invited_decision_reasons_total", "Reason codes of ineligible decisions");
    describe_counter!("invited_jobs_total", "Capture job changes, by kind and the state or change");
    describe_counter!("invited_recorder_reports_total", "Recorder reports on claimed jobs, by outcome");
    describe_histogram!("invited_store_seconds", Unit::Seconds, "Store operation latency, by operation");
    describe_histogram!(
        "invited_pipeline_seconds",
        Unit::Seconds,
        "From acknowledging a message to its decisions and jobs being stored"
    );
    describe_counter!("invited_config_reloads_total", "Configuration reloads (SIGHUP), by outcome");
    describe_gauge!("invited_imap_mailbox_connected", "1 while the IMAP watcher of a mailbox is connected");
    describe_gauge!("invited_imap_mailbox_lag_seconds", "Age of the oldest message not yet fetched from a mailbox");
    describe_gauge!("invited_reply_queue_length", "Reply mails waiting to be sent");
    describe_counter!("invited_replies_total", "Reply mails handled, by outcome");
}

/// A message offered to an intake. `source`: `smtp`, `imap`, `file`. `outcome`: `accepted`
/// (stored, then acknowledged), `duplicate` (the same bytes again), `refused` (a limit or
/// bad input: not stored), `deferred` (the store failed: the sender retries).
pub fn message_received(source: &'static str, outcome: &'static str) {
    ::metrics::counter!("invited_messages_received_total", "source" => source, "outcome" => outcome).increment(1);
}

/// An SMTP session began; [`smtp_session_ended`] when it ends.
pub fn smtp_session_started() {
    ::metrics::counter!("invited_smtp_sessions_total").increment(1);
    ::metrics::gauge!("invited_smtp_sessions_active").increment(1.0);
}

pub fn smtp_session_ended() {
    ::metrics::gauge!("invited_smtp_sessions_active").decrement(1.0);
}

/// An SMTP reply with this code (`250`, `421`, …; the server only sends codes it knows).
pub fn smtp_reply(code: u16) {
    ::metrics::counter!("invited_smtp_replies_total", "code" => reply_code(code)).increment(1);
}

/// The label of a reply code: a fixed string, so that no client can grow the label set.
fn reply_code(code: u16) -> &'static str {
    match code {
        211 => "211",
        214 => "214",
        220 => "220",
        221 => "221",
        250 => "250",
        251 => "251",
        252 => "252",
        354 => "354",
        421 => "421",
        450 => "450",
        451 => "451",
        452 => "452",
        454 => "454",
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        530 => "530",
        550 => "550",
        552 => "552",
        553 => "553",
        554 => "554",
        c if c < 400 => "other_2xx_3xx",
        c if c < 500 => "other_4xx",
        _ => "other_5xx",
    }
}

/// A decision on one event (or a whole message, for message-wide reasons): counted once by
/// eligibility, and once under each of its reason codes.
pub fn decision_made(eligible: bool, reasons: &[&'static str]) {
    let eligible = if eligible { "true" } else { "false" };
    ::metrics::counter!("invited_decisions_total", "eligible" => eligible).increment(1);
    for reason in reasons {
        ::metrics::counter!("invited_decision_reasons_total", "reason" => *reason).increment(1);
    }
}

/// A capture job changed. `kind`: `bot_join`, `cloud_fetch`. `state`: `scheduled`, `joined`
/// (shared with another invite's job), `rescheduled`, `cancelled`, `claimed`, `missed`.
pub fn job_changed(kind: &'static str, state: &'static str) {
    ::metrics::counter!("invited_jobs_total", "kind" => kind, "state" => state).increment(1);
}

/// A recorder's report on a job: `completed`, `retrying`, `failed`, `consent_declined`.
pub fn recorder_report(outcome: &'static str) {
    ::metrics::counter!("invited_recorder_reports_total", "outcome" => outcome).increment(1);
}

/// How long a store operation took. `operation`: `spool`, `load_message`, `record_event`,
/// `finish_message`, `ping`, `claim`.
pub fn store_latency(operation: &'static str, took: Duration) {
    ::metrics::histogram!("invited_store_seconds", "operation" => operation).record(took.as_secs_f64());
}

/// From acknowledging a message to its decisions and jobs being stored.
pub fn pipeline_latency(took: Duration) {
    ::metrics::histogram!("invited_pipeline_seconds").record(took.as_secs_f64());
}

/// A SIGHUP reload: `applied` or `refused` (the file is invalid; the old config stays).
pub fn config_reload(outcome: &'static str) {
    ::metrics::counter!("invited_config_reloads_total", "outcome" => outcome).increment(1);
}

/// The IMAP watcher of a configured mailbox connected (`true`) or lost its connection.
/// `mailbox`: the configured mailbox name (bounded by the config), never a server-side value.
pub fn imap_mailbox_connected(mailbox: &str, connected: bool) {
    ::metrics::gauge!("invited_imap_mailbox_connected", "mailbox" => mailbox.to_owned()).set(if connected {
        1.0
    } else {
        0.0
    });
}

/// How far a mailbox's watcher is behind: the age of the oldest message not yet fetched (0 when
/// it is up to date).
pub fn imap_mailbox_lag(mailbox: &str, lag: Duration) {
    ::metrics::gauge!("invited_imap_mailbox_lag_seconds", "mailbox" => mailbox.to_owned()).set(lag.as_secs_f64());
}

/// Reply mails waiting to be sent.
pub fn reply_queue_length(waiting: usize) {
    ::metrics::gauge!("invited_reply_queue_length").set(waiting as f64);
}

/// A reply mail was handled: `sent`, `retrying`, `failed`.
pub fn reply_handled(outcome: &'static str) {
    ::metrics::counter!("invited_replies_total", "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_outside_the_known_set_share_a_label() {
        assert_eq!(reply_code(250), "250");
        assert_eq!(reply_code(299), "other_2xx_3xx");
        assert_eq!(reply_code(499), "other_4xx");
        assert_eq!(reply_code(999), "other_5xx");
    }

    #[test]
    fn every_metric_is_rendered_under_its_documented_name() {
        let handle = install().expect("the recorder installs in this test binary");
        message_received("smtp", "accepted");
        smtp_session_started();
        smtp_session_ended();
        smtp_reply(250);
        decision_made(false, &["no_seat"]);
        job_changed("bot_join", "scheduled");
        recorder_report("completed");
        store_latency("ping", Duration::from_millis(2));
        pipeline_latency(Duration::from_millis(30));
        config_reload("applied");
        imap_mailbox_connected("acme-inbox", true);
        imap_mailbox_lag("acme-inbox", Duration::from_secs(4));
        reply_queue_length(3);
        reply_handled("sent");
        let text = render(&handle);
        let readme = include_str!("../README.md");
        for name in [
            "invited_messages_received_total{source=\"smtp\",outcome=\"accepted\"} ",
            "invited_smtp_sessions_total ",
            "invited_smtp_sessions_active 0",
            "invited_smtp_replies_total{code=\"250\"} ",
            "invited_decisions_total{eligible=\"false\"} ",
            "invited_decision_reasons_total{reason=\"no_seat\"} ",
            "invited_jobs_total{kind=\"bot_join\",state=\"scheduled\"} ",
            "invited_recorder_reports_total{outcome=\"completed\"} ",
            "invited_store_seconds_bucket{operation=\"ping\",le=\"0.0025\"} ",
            "invited_pipeline_seconds_count ",
            "invited_config_reloads_total{outcome=\"applied\"} ",
            "invited_imap_mailbox_connected{mailbox=\"acme-inbox\"} 1",
            "invited_imap_mailbox_lag_seconds{mailbox=\"acme-inbox\"} 4",
            "invited_reply_queue_length 3",
            "invited_replies_total{outcome=\"sent\"} ",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
            let metric = name.split(['{', ' ']).next().unwrap_or_default();
            let family = metric.trim_end_matches("_bucket").trim_end_matches("_count");
            assert!(readme.contains(&format!("`{family}`")), "{family} is not documented in README.md");
        }
    }
}
