//! Where mail comes in. `smtp`: the SMTP server `serve` runs on `server.smtp_listen`;
//! `imap`: the mailboxes `serve` watches
//! (file intake is `invited ingest`, in `cli`/`pipeline`).

pub mod imap;
pub mod smtp;
