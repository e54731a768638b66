//! Plain data passed between the pipeline steps. No I/O and no behaviour beyond
//! small accessors: each step takes these values and returns values.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One calendar object found in a mail, before it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarPart {
    /// Transfer-decoded bytes of the part (charset not yet applied: the ICS
    /// reader sniffs UTF-16 / Latin-1 itself).
    pub bytes: Vec<u8>,
    /// Lowercased `type/subtype` of the part as declared, e.g. `text/calendar`.
    pub content_type: String,
    /// The `method=` parameter of the Content-Type, uppercased, if present.
    pub method_param: Option<String>,
    /// The `charset=` parameter, lowercased, if present.
    pub charset: Option<String>,
    /// Attachment file name, if any.
    pub filename: Option<String>,
}

/// What the MIME walk learned about one mail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// `Message-ID` without angle brackets.
    pub message_id: Option<String>,
    pub subject: Option<String>,
    /// Address of the header `From`, lowercased.
    pub from: Option<String>,
    /// Address of the header `Sender`, lowercased.
    pub sender: Option<String>,
    /// Addresses of To, Cc, Delivered-To and X-Original-To, lowercased, in that order, deduplicated.
    pub header_recipients: Vec<String>,
    /// Raw values of every `Authentication-Results` header, topmost first.
    pub authentication_results: Vec<String>,
    /// Every calendar object, deduplicated by content.
    pub calendars: Vec<CalendarPart>,
    /// Damage noticed while walking the MIME tree (limits hit, unreadable parts).
    pub problems: Vec<String>,
    /// What the outer headers say about answering the mail (reply mail's loop rules).
    pub reply_headers: ReplyHeaders,
    /// Our own DKIM/SPF/DMARC verdict on From (`sender_auth = "dmarc"`), once checked.
    pub dmarc: Option<crate::auth::AuthVerdict>,
}

/// What the outer headers of a mail say about answering it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyHeaders {
    /// `Auto-Submitted`, lowercased, without comments or parameters.
    pub auto_submitted: Option<String>,
    /// `Precedence`, lowercased.
    pub precedence: Option<String>,
    /// The first `List-Id` / `List-*` header's name: the mail came through a mailing list.
    pub list_header: Option<String>,
    /// `Return-Path` is `<>`: a bounce or other automatic mail.
    pub null_return_path: bool,
    /// `<id>` values of References, oldest first, at most `notify::guard::MAX_REFERENCES`.
    pub references: Vec<String>,
}

/// An ORGANIZER property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organizer {
    /// Lowercased mail address (from `mailto:`, a bare address, or `EMAIL=`).
    pub email: String,
    /// Lowercased address of the `SENT-BY` parameter, if any.
    pub sent_by: Option<String>,
    /// The `CN` parameter, if any.
    pub name: Option<String>,
}

/// A URL found in an event, with the property it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub url: String,
    /// Property name, uppercased: `CONFERENCE`, `X-GOOGLE-CONFERENCE`, `URL`, `LOCATION`, `DESCRIPTION`, …
    pub source: String,
}

/// One VEVENT, normalised. This is what is stored as an event version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventVersion {
    pub uid: String,
    /// RECURRENCE-ID in UTC (all-day ids: local midnight in the event's zone).
    pub recurrence_id: Option<DateTime<Utc>>,
    /// SEQUENCE, else X-MICROSOFT-CDO-APPT-SEQUENCE, else 0.
    pub sequence: i64,
    pub dtstamp: Option<DateTime<Utc>>,
    /// METHOD of the calendar object, else the part's `method=` parameter, uppercased.
    pub method: Option<String>,
    /// STATUS, uppercased.
    pub status: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// IANA name of the zone the times were written in (`UTC` for `Z` times).
    pub timezone: Option<String>,
    pub all_day: bool,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub organizer: Option<Organizer>,
    /// Lowercased attendee addresses.
    pub attendees: Vec<String>,
    /// The RRULE value as written (without the `RRULE:` name).
    pub rrule: Option<String>,
    pub rdates: Vec<DateTime<Utc>>,
    pub exdates: Vec<DateTime<Utc>>,
    /// Every http(s) URL of the event, in the order the properties were read:
    /// CONFERENCE, X- join-link properties, URL, LOCATION, DESCRIPTION.
    pub links: Vec<Link>,
    /// What could not be read in this VEVENT (bad lines, unresolved zones, …).
    pub problems: Vec<String>,
}

impl EventVersion {
    /// Whether this version cancels the event or occurrence.
    pub fn is_cancel(&self) -> bool {
        self.method.as_deref() == Some("CANCEL") || self.status.as_deref() == Some("CANCELLED")
    }
}

/// The result of reading one calendar part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedCalendar {
    /// Every VEVENT that has a UID.
    pub events: Vec<EventVersion>,
    /// Number of VEVENTs skipped because they had no UID.
    pub events_without_uid: usize,
    /// Calendar-level problems (unreadable lines, encoding guesses, …).
    pub problems: Vec<String>,
}
