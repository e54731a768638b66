//! One calendar object → normalised event versions. Pure.

use crate::model::{CalendarPart, ParsedCalendar};

/// Limits on reading one calendar object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcsLimits {
    /// Most VEVENTs read from one calendar part.
    pub max_events: usize,
    /// Longest unfolded content line kept (longer lines are reported and skipped).
    pub max_line_bytes: usize,
}

impl Default for IcsLimits {
    fn default() -> Self {
        Self { max_events: 500, max_line_bytes: 256 * 1024 }
    }
}

/// Reads every VEVENT of the part. Floating times and all-day dates are read in `default_tz`.
pub fn parse_calendar(_part: &CalendarPart, _default_tz: chrono_tz::Tz, _limits: &IcsLimits) -> ParsedCalendar {
    ParsedCalendar::default()
}
