//! A reply's body, built once as plain data and written out as plain text and as HTML.
//! Pure: what the decision said, in the words of [`wording`](super::wording).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::wording;
use crate::conference::Conference;
use crate::eligibility::{Decision, PlanKind};
use crate::model::EventVersion;
use crate::store::ReplyOutcome;

/// Longest summary repeated in a subject; a longer one is cut.
const MAX_SUMMARY_CHARS: usize = 200;

/// The column where plain-text values start ("Bot joins: " is the longest label).
const LABEL_WIDTH: usize = 11;

/// A reply before it is written out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub headline: String,
    /// Label and value lines: the meeting, when, where.
    pub fields: Vec<(String, Vec<String>)>,
    /// Paragraphs after the fields.
    pub paragraphs: Vec<String>,
    /// Headed lists: reasons with what to do, notes.
    pub lists: Vec<(String, Vec<Vec<String>>)>,
    pub footer: String,
}

/// The meeting's summary fit for a subject line: one line, at most [`MAX_SUMMARY_CHARS`].
pub fn summary_line(summary: Option<&str>) -> String {
    let one_line: String = summary
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if one_line.is_empty() {
        return "your meeting".into();
    }
    let mut cut: String = one_line.chars().take(MAX_SUMMARY_CHARS).collect();
    if cut.len() < one_line.len() {
        cut.push('…');
    }
    cut
}

/// When the meeting is, in the tenant's zone and in UTC.
pub fn when_lines(event: &EventVersion, tz: Tz) -> Vec<String> {
    let Some(start) = event.start else { return vec!["no start time given".into()] };
    let end = event.end.unwrap_or(start);
    let mut lines = if event.all_day {
        vec![format!("{} (all day)", start.with_timezone(&tz).format("%A %-d %B %Y"))]
    } else if tz == Tz::UTC {
        vec![span(start, end, Tz::UTC)]
    } else {
        vec![format!("{} ({tz})", span(start, end, tz)), span(start, end, Tz::UTC)]
    };
    if event.rrule.is_some() {
        lines.push("a recurring meeting: the time above is its first occurrence".into());
    }
    lines
}

/// One moment in the tenant's zone, and in UTC when that differs.
fn moment(t: DateTime<Utc>, tz: Tz) -> String {
    let local = t.with_timezone(&tz).format("%A %-d %B %Y, %H:%M %Z").to_string();
    if tz == Tz::UTC {
        local
    } else {
        format!("{local} ({} UTC)", t.format("%H:%M"))
    }
}

fn span(start: DateTime<Utc>, end: DateTime<Utc>, tz: Tz) -> String {
    let (s, e) = (start.with_timezone(&tz), end.with_timezone(&tz));
    if s.date_naive() == e.date_naive() {
        format!("{}–{} {}", s.format("%A %-d %B %Y, %H:%M"), e.format("%H:%M"), e.format("%Z"))
    } else {
        format!("{} – {} {}", s.format("%A %-d %B %Y %H:%M"), e.format("%A %-d %B %Y %H:%M"), e.format("%Z"))
    }
}

/// Everything the reply says about one outcome.
pub fn body(
    outcome: ReplyOutcome,
    event: &EventVersion,
    decision: &Decision,
    conference: Option<&Conference>,
    tz: Tz,
    assistant: &str,
) -> Body {
    let mut fields = vec![
        ("Meeting".to_string(), vec![summary_line(event.summary.as_deref())]),
        ("When".to_string(), when_lines(event, tz)),
    ];
    let provider = wording::provider_name(conference.and_then(|c| c.provider));
    if let Some(c) = conference {
        fields.push(("Where".to_string(), vec![format!("{provider}, {}", c.url)]));
    }
    let mut paragraphs = Vec::new();
    let mut lists = Vec::new();
    match (outcome, &decision.plan) {
        (ReplyOutcome::Scheduled | ReplyOutcome::Rescheduled, Some(plan)) => {
            let label = match plan.kind {
                PlanKind::BotJoin => "Bot joins",
                PlanKind::CloudFetch => "Fetched",
            };
            fields.push((label.to_string(), vec![moment(plan.run_at, tz)]));
            paragraphs.push(wording::plan_sentence(plan.kind, provider));
            let notes: Vec<Vec<String>> =
                plan.flags.iter().map(|f| vec![wording::flag_sentence(*f).to_string()]).collect();
            if !notes.is_empty() {
                lists.push((wording::NOTES_HEADING.to_string(), notes));
            }
        }
        (ReplyOutcome::Cancelled, _) => paragraphs.push(wording::CANCELLED_ADVICE.to_string()),
        _ => {
            let reasons = decision
                .reasons
                .iter()
                .map(|r| {
                    let (what, todo) = wording::reason_sentence(r.code);
                    let mut item = vec![what.to_string()];
                    if r.code == crate::eligibility::ReasonCode::ProviderMisconfigured {
                        item.push(format!("(The service reports: {}.)", summary_line(Some(&r.message))));
                    }
                    item.push(todo.to_string());
                    item
                })
                .collect();
            lists.push((wording::REASONS_HEADING.to_string(), reasons));
        }
    }
    Body {
        headline: wording::headline(outcome).to_string(),
        fields,
        paragraphs,
        lists,
        footer: wording::footer(assistant),
    }
}

impl Body {
    pub fn to_text(&self) -> String {
        let mut out = format!("{}\n\n", self.headline);
        // Values line up in one column whatever labels this reply has.
        let width = self.fields.iter().map(|(l, _)| l.len() + 2).max().unwrap_or(0).max(LABEL_WIDTH);
        for (label, values) in &self.fields {
            for (i, v) in values.iter().enumerate() {
                let head = if i == 0 { format!("{label}:") } else { String::new() };
                out.push_str(&format!("{head:width$}{v}\n"));
            }
        }
        for p in &self.paragraphs {
            out.push_str(&format!("\n{p}\n"));
        }
        for (heading, items) in &self.lists {
            out.push_str(&format!("\n{heading}\n"));
            for item in items {
                for (i, line) in item.iter().enumerate() {
                    out.push_str(if i == 0 { "- " } else { "  " });
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out.push_str(&format!("\n-- \n{}\n", self.footer));
        out
    }

    pub fn to_html(&self) -> String {
        let mut out = String::from("<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif\">\n");
        out.push_str(&format!("<p><strong>{}</strong></p>\n<table>\n", escape(&self.headline)));
        for (label, values) in &self.fields {
            let value = values.iter().map(|v| escape(v)).collect::<Vec<_>>().join("<br>");
            out.push_str(&format!(
                "<tr><th style=\"text-align: left; vertical-align: top\">{}</th><td>{value}</td></tr>\n",
                escape(label)
            ));
        }
        out.push_str("</table>\n");
        for p in &self.paragraphs {
            out.push_str(&format!("<p>{}</p>\n", escape(p)));
        }
        for (heading, items) in &self.lists {
            out.push_str(&format!("<p>{}</p>\n<ul>\n", escape(heading)));
            for item in items {
                let lines = item.iter().map(|l| escape(l)).collect::<Vec<_>>().join("<br>");
                out.push_str(&format!("<li>{lines}</li>\n"));
            }
            out.push_str("</ul>\n");
        }
        out.push_str(&format!("<p style=\"color: #666\">{}</p>\n</body></html>\n", escape(&self.footer)));
        out
    }
}

/// Text made safe inside HTML elements and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_one_bounded_line() {
        assert_eq!(summary_line(Some("a\r\nBcc: x@y\tz")), "a Bcc: x@y z");
        assert_eq!(summary_line(None), "your meeting");
        assert_eq!(summary_line(Some(&"x".repeat(500))).chars().count(), MAX_SUMMARY_CHARS + 1);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("<script>\"&'"), "&lt;script&gt;&quot;&amp;&#39;");
    }
}
