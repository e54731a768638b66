//! The DATA receiver: bytes after `354` → the message, or why it is refused. Pure.
//!
//! Lines end only at CRLF. A bare LF or a bare CR anywhere in the data marks the message
//! refused (SMTP smuggling: `<LF>.<LF>`, `<LF>.<CR><LF>`, `<CR><LF>.<LF>` and friends), and
//! such a line never ends the data: only `.` alone on a line that follows a CRLF does.
//! A leading dot is removed (RFC 5321 §4.5.2). Memory is bounded by the size limit and one
//! line: an over-long line is skipped, not buffered.

/// Why a message is refused once its data has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataProblem {
    /// The message is larger than the size limit.
    TooLarge,
    /// A line is longer than the line limit.
    LineTooLong,
    /// A bare LF or bare CR: a line ending other than CRLF.
    BareLineEnding,
}

impl DataProblem {
    /// The log `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            DataProblem::TooLarge => "message_too_large",
            DataProblem::LineTooLong => "data_line_too_long",
            DataProblem::BareLineEnding => "bare_line_ending",
        }
    }
}

/// Receives the data of one message.
#[derive(Debug)]
pub struct DataReceiver {
    body: Vec<u8>,
    max_size: usize,
    max_line: usize,
    /// The next byte starts a line (the previous line ended with CRLF).
    at_line_start: bool,
    /// Inside a line longer than `max_line`, whose bytes are dropped up to its LF.
    skipping: bool,
    /// The last byte dropped while skipping was CR.
    skipped_cr: bool,
    problem: Option<DataProblem>,
    size: usize,
}

impl DataReceiver {
    pub fn new(max_size: usize, max_line: usize) -> Self {
        DataReceiver {
            body: Vec::with_capacity(16 * 1024),
            max_size,
            max_line,
            at_line_start: true,
            skipping: false,
            skipped_cr: false,
            problem: None,
            size: 0,
        }
    }

    fn refuse(&mut self, problem: DataProblem) {
        self.problem.get_or_insert(problem);
        if problem == DataProblem::TooLarge {
            self.body = Vec::new();
        }
    }

    /// Reads complete lines from `input`. Returns how many bytes were consumed (an incomplete
    /// last line is left for the next call, unless it is already too long) and, once the
    /// terminating `.` line was read, the message or why it is refused.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Result<Vec<u8>, DataProblem>>) {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
                if self.skipping || rest.len() > self.max_line {
                    if !self.skipping {
                        self.refuse(DataProblem::LineTooLong);
                        self.skipping = true;
                    }
                    if let Some(&last) = rest.last() {
                        self.skipped_cr = last == b'\r';
                    }
                    if rest.iter().rev().skip(1).any(|&b| b == b'\r') {
                        self.refuse(DataProblem::BareLineEnding);
                    }
                    pos = input.len();
                }
                return (pos, None);
            };
            let line = &rest[..=lf];
            pos += lf + 1;
            if self.skipping {
                // The end of an over-long line: only its ending matters.
                self.skipping = false;
                let crlf = if line.len() >= 2 { line[line.len() - 2] == b'\r' } else { self.skipped_cr };
                let body = &line[..line.len().saturating_sub(2)];
                if !crlf || body.contains(&b'\r') {
                    self.refuse(DataProblem::BareLineEnding);
                }
                self.at_line_start = crlf;
                continue;
            }
            let crlf = line.ends_with(b"\r\n");
            let text = &line[..line.len() - if crlf { 2 } else { 1 }];
            if !crlf || text.contains(&b'\r') {
                self.refuse(DataProblem::BareLineEnding);
            }
            if line.len() > self.max_line {
                self.refuse(DataProblem::LineTooLong);
            }
            if self.at_line_start && crlf && text == b"." {
                let result = match self.problem {
                    Some(p) => Err(p),
                    None => Ok(std::mem::take(&mut self.body)),
                };
                return (pos, Some(result));
            }
            let unstuffed = if self.at_line_start && text.first() == Some(&b'.') { &line[1..] } else { line };
            self.size = self.size.saturating_add(unstuffed.len());
            if self.size > self.max_size {
                self.refuse(DataProblem::TooLarge);
            }
            if self.problem.is_none() {
                self.body.extend_from_slice(unstuffed);
            }
            self.at_line_start = crlf;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `step` bytes; returns the outcome and the bytes left after it.
    fn run(input: &[u8], step: usize) -> (Option<Result<Vec<u8>, DataProblem>>, Vec<u8>) {
        let mut rx = DataReceiver::new(1000, 100);
        let mut pending: Vec<u8> = Vec::new();
        for chunk in input.chunks(step) {
            pending.extend_from_slice(chunk);
            let (used, done) = rx.feed(&pending);
            pending.drain(..used);
            if done.is_some() {
                return (done, pending);
            }
        }
        (None, pending)
    }

    #[test]
    fn ends_only_on_crlf_dot_crlf_and_unstuffs() {
        for step in [1, 2, 3, 7, 1000] {
            let (out, _) = run(b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n", step);
            assert_eq!(out, Some(Ok(b"Subject: x\r\n\r\n.dot\r\n".to_vec())), "step {step}");
        }
    }

    #[test]
    fn smuggling_variants_never_end_the_data_and_are_refused() {
        for smuggle in [&b"\n.\n"[..], b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n", b"\n.\r", b"\r\n.\r"] {
            let mut input = b"Subject: a\r\n\r\nbody".to_vec();
            input.extend_from_slice(smuggle);
            input.extend_from_slice(b"MAIL FROM:<x@evil>\r\nRCPT TO:<acme@a>\r\nDATA\r\nevil\r\n.\r\n");
            for step in [1, 5, 4096] {
                let (out, rest) = run(&input, step);
                assert_eq!(out, Some(Err(DataProblem::BareLineEnding)), "{smuggle:?} step {step}");
                assert!(rest.is_empty(), "{smuggle:?}: the data ended early");
            }
        }
    }

    #[test]
    fn limits() {
        let long = [b"a".repeat(150), b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(run(&long, 7).0, Some(Err(DataProblem::LineTooLong)));
        assert_eq!(run(&long, 4096).0, Some(Err(DataProblem::LineTooLong)));
        let big = [b"a\r\n".repeat(400), b".\r\n".to_vec()].concat();
        assert_eq!(run(&big, 64).0, Some(Err(DataProblem::TooLarge)));
        assert_eq!(run(b".\r\n", 1).0, Some(Ok(Vec::new())));
    }
}
