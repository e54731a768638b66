//! The command line (design.md: `serve`, `ingest`, `explain`, `jobs`, `history`, `reprocess`,
//! `check-config`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::pipeline::{self, Explanation};
use crate::store::{self, Source, Store};
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "invited",
    version,
    about = "Records meetings on request: reads forwarded invites, decides, schedules capture jobs"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "INVITED_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Log line format (logs go to stderr; RUST_LOG filters).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: scheduler and HTTP (health) until SIGINT/SIGTERM.
    Serve,
    /// Store and process mail files (`-` reads standard input), as if they arrived by SMTP.
    Ingest {
        /// Envelope recipient; repeat for several. Default: the To, Cc, Delivered-To and X-Original-To headers.
        #[arg(long = "rcpt")]
        rcpt: Vec<String>,
        /// Fix the clock (RFC 3339) for reproducible results.
        #[arg(long)]
        now: Option<String>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show what would happen to a mail, without writing anything.
    Explain {
        #[arg(long = "rcpt")]
        rcpt: Vec<String>,
        #[arg(long)]
        now: Option<String>,
        /// Print the stable JSON object instead of a summary.
        #[arg(long)]
        json: bool,
        file: PathBuf,
    },
    /// List capture jobs, soonest first.
    Jobs {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Include done, failed and cancelled jobs.
        #[arg(long)]
        all: bool,
    },
    /// Every stored version of an event, oldest first, with the decisions taken.
    History {
        uid: String,
        #[arg(long)]
        json: bool,
    },
    /// Process again messages that failed or were left unfinished.
    Reprocess {
        #[arg(long)]
        now: Option<String>,
    },
    /// Validate the configuration and print it resolved (defaults, environment), secrets
    /// masked. Exit 1 naming the key and the problem.
    CheckConfig,
}

pub async fn run(cli: Cli) -> ExitCode {
    let default_level = match cli.command {
        Command::Serve => "info",
        _ => "warn",
    };
    telemetry::init(cli.log_format, default_level);
    match execute(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("invited: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Arc::new(Config::load(&cli.config)?);
    match cli.command {
        Command::Explain { rcpt, now, json, file } => {
            let raw = read_input(&file)?;
            let explanation = pipeline::explain_checked(&config, &raw, &rcpt, parse_now(now.as_deref())?).await;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &explanation)?;
                writeln!(out)?;
            } else {
                write_summary(&mut out, &explanation)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            let store = open_store(&config).await?;
            crate::serve::run(config, cli.config.clone(), store).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest { rcpt, now, files } => {
            let store = open_store(&config).await?;
            let now = parse_now(now.as_deref())?;
            let mut failed = false;
            for file in &files {
                let outcome = match read_input(file) {
                    Ok(raw) => pipeline::ingest(store.as_ref(), &config, raw, Source::File, None, rcpt.clone(), now)
                        .await
                        .map_err(anyhow::Error::from),
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(report) => println!("{}: {}", file.display(), serde_json::to_string(&report)?),
                    Err(e) => {
                        eprintln!("invited: {}: {e:#}", file.display());
                        failed = true;
                    }
                }
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Jobs { json, all } => {
            let store = open_store(&config).await?;
            let mut out = std::io::stdout().lock();
            for job in store.jobs(all).await? {
                if json {
                    writeln!(out, "{}", serde_json::to_string(&job)?)?;
                } else {
                    writeln!(
                        out,
                        "{:>6}  {:<10} {:<11} {}  {:<12} {}  {}",
                        job.id,
                        job.state,
                        job.kind,
                        job.run_at.to_rfc3339(),
                        job.provider,
                        job.event_uid,
                        job.meeting_url
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History { uid, json } => {
            let store = open_store(&config).await?;
            let entries = store.history(&uid).await?;
            if entries.is_empty() {
                return Err(anyhow!("no event with UID {uid:?} is stored"));
            }
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &entries)?;
                writeln!(out)?;
            } else {
                for e in entries {
                    let v = &e.version;
                    writeln!(
                        out,
                        "version {} ({}) seq={} method={} start={} messages={:?}",
                        e.version_id,
                        e.received_at.to_rfc3339(),
                        v.sequence,
                        v.method.as_deref().unwrap_or("-"),
                        v.start.map(|s| s.to_rfc3339()).unwrap_or_else(|| "-".into()),
                        e.message_ids
                    )?;
                    for d in e.decisions {
                        writeln!(out, "  decision for {:?}: {}", d.requester.map(|r| r.email), d.decision)?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => {
            let text =
                crate::config::resolved_toml(&config).map_err(|e| anyhow!("cannot print the configuration: {e}"))?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "# {}: valid (defaults and INVITED_* overrides applied, secrets masked)",
                cli.config.display()
            )?;
            write!(out, "{text}")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reprocess { now } => {
            let store = open_store(&config).await?;
            let now = parse_now(now.as_deref())?;
            let ids = store.unfinished_messages(true).await?;
            let mut failed = false;
            for id in &ids {
                match pipeline::process_message(store.as_ref(), &config, *id, now).await {
                    Ok(report) => println!("message {id}: {}", serde_json::to_string(&report)?),
                    Err(e) => {
                        eprintln!("invited: message {id}: {e}");
                        failed = true;
                    }
                }
            }
            eprintln!("{} message(s) reprocessed", ids.len());
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    store::open(&config.store.url)
        .await
        .with_context(|| format!("cannot open store.url = {}", crate::config::mask_url(&config.store.url)))
}

fn read_input(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut raw = Vec::new();
        std::io::stdin().read_to_end(&mut raw).context("cannot read standard input")?;
        return Ok(raw);
    }
    std::fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))
}

fn parse_now(now: Option<&str>) -> anyhow::Result<DateTime<Utc>> {
    match now {
        None => Ok(Utc::now()),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| anyhow!("--now {s:?} is not an RFC 3339 time: {e}")),
    }
}

fn write_summary(out: &mut impl Write, e: &Explanation) -> std::io::Result<()> {
    writeln!(out, "tenant: {}", e.recipient_tenant.as_deref().unwrap_or("(none)"))?;
    writeln!(out, "requester: {}", e.requester.as_ref().map_or("(none)", |r| r.email.as_str()))?;
    for r in &e.reasons {
        writeln!(out, "not an invite we can act on: {} — {}", r.code.as_str(), r.message)?;
    }
    for ev in &e.events {
        writeln!(
            out,
            "event {} {}: {} → {}",
            ev.uid,
            ev.start.map(|s| s.to_rfc3339()).unwrap_or_else(|| "(no start)".into()),
            ev.summary.as_deref().unwrap_or(""),
            if ev.decision.eligible { "will be recorded" } else { "will not be recorded" }
        )?;
        if let Some(plan) = &ev.decision.plan {
            writeln!(out, "  {} at {}", plan.kind.as_str(), plan.run_at.to_rfc3339())?;
        }
        for r in &ev.decision.reasons {
            writeln!(out, "  {}: {}", r.code.as_str(), r.message)?;
        }
    }
    for p in &e.problems {
        writeln!(out, "problem: {p}")?;
    }
    Ok(())
}
