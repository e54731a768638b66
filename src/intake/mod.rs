//! Where mail comes in. `smtp`: the SMTP server `serve` runs on `server.smtp_listen`
//! (file intake is `invited ingest`, in `cli`/`pipeline`).

pub mod smtp;
