//! Logs an operator tails: one line per event that matters, key=value or JSON, on stderr
//! (stdout belongs to command output such as `explain --json`). `RUST_LOG` filters.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing::Subscriber;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Text lines print the event name as `event=name`, so that an operator can grep
/// `event=decision_made reason=no_seat`; the other fields are `key=value` as usual. (JSON
/// keeps the name in `message`.)
fn text_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        if field.name() == "message" {
            write!(w, "event={value:?}")
        } else {
            write!(w, "{field}={}", unquoted(&format!("{value:?}")))
        }
    })
    .delimited(" ")
}

/// A string value that needs no quoting (`no_seat`, `alice@acme.com`) is printed bare;
/// one with spaces, quotes or escapes keeps its quotes.
fn unquoted(debug: &str) -> &str {
    match debug.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) if !inner.is_empty() && !inner.contains([' ', '"', '\\', '=']) => inner,
        _ => debug,
    }
}

/// async-imap traces every command it sends, `LOGIN user password` included: its events
/// below INFO are dropped whatever `RUST_LOG` says (even `async_imap::imap_stream=trace`).
fn is_quiet_imap(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    (target == "async_imap" || target.starts_with("async_imap::")) && *meta.level() > tracing::Level::INFO
}

/// The subscriber `init` installs, writing to `writer`.
fn subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W, ansi: bool) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let quiet = tracing_subscriber::filter::filter_fn(|meta| !is_quiet_imap(meta));
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi).with_target(false);
    match format {
        LogFormat::Text => Box::new(builder.fmt_fields(text_fields()).finish().with(quiet)),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish().with(quiet)),
    }
}

/// Installs the global subscriber. `default_level` applies when `RUST_LOG` is unset.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Colour only for a person at a terminal: a log file or journald gets plain key=value.
    let _ = subscriber(format, filter, std::io::stderr, std::io::stderr().is_terminal()).try_init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::{subscriber, unquoted, LogFormat};
    use tracing_subscriber::EnvFilter;

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn async_imap_below_info_is_dropped_even_when_rust_log_asks_for_it() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let lines = Lines::default();
            let writer = lines.clone();
            let filter = EnvFilter::new("info,async_imap::imap_stream=trace,async_imap=debug");
            let sub = subscriber(format, filter, move || writer.clone(), false);
            tracing::subscriber::with_default(sub, || {
                tracing::trace!(target: "async_imap::imap_stream", "encode: input: \"A0001 LOGIN alice hunter2\"");
                tracing::debug!(target: "async_imap", "LOGIN alice hunter2");
                tracing::warn!(target: "async_imap::client", "imap_warning_kept");
                tracing::info!("our_event_kept");
            });
            let text = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf-8");
            assert!(!text.contains("hunter2"), "{format:?}: {text}");
            assert!(text.contains("imap_warning_kept") && text.contains("our_event_kept"), "{format:?}: {text}");
        }
    }

    #[test]
    fn plain_values_lose_their_quotes_and_others_keep_them() {
        assert_eq!(unquoted("\"no_seat\""), "no_seat");
        assert_eq!(unquoted("\"alice@acme.com\""), "alice@acme.com");
        assert_eq!(unquoted("\"two words\""), "\"two words\"");
        assert_eq!(unquoted("\"\""), "\"\"");
        assert_eq!(unquoted("\"a\\\"b\""), "\"a\\\"b\"");
        assert_eq!(unquoted("42"), "42");
    }
}
