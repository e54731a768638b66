//! The current state of one (tenant, UID, RECURRENCE-ID) from all its stored versions.
//! Pure (design.md "Updates", precise rules 11 and 13).

use crate::model::EventVersion;

/// Methods that are stored but never change what the meeting is (RFC 5546 §3.2).
const IGNORED_METHODS: [&str; 4] = ["REPLY", "COUNTER", "REFRESH", "DECLINECOUNTER"];

/// Whether a version can change the meeting's state.
pub fn changes_state(v: &EventVersion) -> bool {
    !v.method.as_deref().is_some_and(|m| IGNORED_METHODS.contains(&m))
}

/// The version in force: highest SEQUENCE; at equal SEQUENCE a cancellation wins whatever
/// its DTSTAMP (Outlook regenerates DTSTAMP when forwarding); then DTSTAMP; then arrival.
/// `versions` pairs each version with its arrival order.
pub fn current<'a>(versions: impl IntoIterator<Item = (&'a EventVersion, i64)>) -> Option<&'a EventVersion> {
    versions
        .into_iter()
        .filter(|(v, _)| changes_state(v))
        .max_by_key(|(v, arrival)| (v.sequence, v.is_cancel(), v.dtstamp, *arrival))
        .map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn v(method: &str, seq: i64, stamp_hour: u32) -> EventVersion {
        EventVersion {
            uid: "u".into(),
            sequence: seq,
            dtstamp: Some(Utc.with_ymd_and_hms(2027, 1, 1, stamp_hour, 0, 0).unwrap()),
            method: Some(method.into()),
            summary: Some(format!("{method} {seq} {stamp_hour}")),
            ..EventVersion::default()
        }
    }

    fn pick(vs: &[EventVersion]) -> Option<String> {
        current(vs.iter().zip(0..)).and_then(|v| v.summary.clone())
    }

    #[test]
    fn ordering_rules() {
        let cases: &[(&[EventVersion], Option<&str>)] = &[
            (&[v("REQUEST", 0, 1), v("REQUEST", 1, 0)], Some("REQUEST 1 0")),
            (&[v("REQUEST", 1, 0), v("REQUEST", 0, 5)], Some("REQUEST 1 0")),
            (&[v("REQUEST", 1, 1), v("REQUEST", 1, 2)], Some("REQUEST 1 2")),
            (&[v("REQUEST", 1, 5), v("CANCEL", 1, 1)], Some("CANCEL 1 1")),
            (&[v("CANCEL", 1, 1), v("REQUEST", 1, 5)], Some("CANCEL 1 1")),
            (&[v("CANCEL", 1, 1), v("REQUEST", 2, 0)], Some("REQUEST 2 0")),
            (&[v("REQUEST", 0, 1), v("REPLY", 3, 2)], Some("REQUEST 0 1")),
            (&[v("REPLY", 0, 1)], None),
        ];
        for (versions, want) in cases {
            assert_eq!(pick(versions).as_deref(), *want, "{versions:?}");
        }
    }

    #[test]
    fn arrival_breaks_full_ties() {
        let a = v("REQUEST", 1, 1);
        let mut b = v("REQUEST", 1, 1);
        b.summary = Some("later".into());
        assert_eq!(pick(&[a, b]).as_deref(), Some("later"));
    }
}
