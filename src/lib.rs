//! `invited` records meetings on request.
//!
//! One message goes through these steps (design.md, "Data flow"):
//! ```text
//! intake (file, SMTP, IMAP) ─► store raw ─► mime::extract ─► ics::parse_calendar
//!   ─► store version ─► state::current ─► eligibility::decide ─► schedule::plan ─► store jobs
//! ```
//! Pure steps (`mime`, `ics`, `conference`, `state`, `eligibility`, `schedule`) take
//! values and return values; only `store`, `intake`, `http` and `notify::sender` (reply
//! mail) touch the outside world.

pub mod auth;
pub mod cli;
pub mod conference;
pub mod config;
pub mod dmarc;
pub mod eligibility;
pub mod http;
pub mod ics;
pub mod intake;
pub mod metrics;
pub mod mime;
pub mod model;
pub mod notify;
pub mod pipeline;
pub mod readiness;
pub mod schedule;
pub mod serve;
pub mod state;
pub mod store;
pub mod telemetry;
