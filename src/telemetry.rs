//! Logs an operator tails: one line per event that matters, key=value or JSON, on stderr
//! (stdout belongs to command output such as `explain --json`). `RUST_LOG` filters.

use std::io::IsTerminal;

use clap::ValueEnum;
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

/// Installs the global subscriber. `default_level` applies when `RUST_LOG` is unset.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // async-imap traces every command it sends, LOGIN and its password included: never below info.
    let filter = match "async_imap=info".parse() {
        Ok(quiet) => filter.add_directive(quiet),
        Err(_) => filter,
    };
    // Colour only for a person at a terminal: a log file or journald gets plain key=value.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.fmt_fields(text_fields()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::unquoted;

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
