//! Occurrences and capture jobs: which occurrences of an event lie ahead, and which
//! jobs a decision calls for. Pure: `now` is passed in.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use rrule::RRuleSet;
use serde::Serialize;

use crate::config::SchedulingConfig;
use crate::eligibility::{self, Decision, Flag, PlanKind, Timing};
use crate::model::EventVersion;

/// One occurrence of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    /// The occurrence's start as the series generates it: its identity within the series.
    pub slot: Option<DateTime<Utc>>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Occurrences that have not ended, in start order, and what could not be expanded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Occurrences {
    pub upcoming: Vec<Occurrence>,
    /// True when the event has a start time at all.
    pub has_start: bool,
    pub problems: Vec<String>,
}

impl Occurrences {
    pub fn timing(&self) -> Timing {
        match (self.has_start, self.upcoming.first()) {
            (false, _) => Timing::NoStart,
            (true, None) => Timing::Ended,
            (true, Some(o)) => Timing::Next { start: o.start, end: o.end },
        }
    }
}

/// The occurrences of `event` that end after `now`, at most `max`. A series is expanded
/// from its RRULE/RDATE/EXDATE in the zone it was written in (`fallback_tz` when that
/// zone is not an IANA one).
pub fn upcoming_occurrences(
    event: &EventVersion,
    fallback_tz: chrono_tz::Tz,
    now: DateTime<Utc>,
    max: usize,
) -> Occurrences {
    let Some(start) = event.start else { return Occurrences::default() };
    let end = event.end.unwrap_or(start).max(start);
    let single = |problems| Occurrences {
        upcoming: (end > now || (end == start && start >= now))
            .then_some(Occurrence { slot: None, start, end })
            .into_iter()
            .collect(),
        has_start: true,
        problems,
    };
    if event.recurrence_id.is_some() || (event.rrule.is_none() && event.rdates.is_empty()) {
        return single(vec![]);
    }
    let tz = event.timezone.as_deref().and_then(|t| t.parse::<chrono_tz::Tz>().ok()).unwrap_or(fallback_tz);
    match expand(event, tz, start, end - start, now, max) {
        // DTSTART is always an occurrence (RFC 5545 §3.8.5.3): a rule that loses a future
        // DTSTART is broken, not finished.
        Ok(upcoming) if upcoming.is_empty() && end > now => {
            single(vec!["recurrence expands to nothing; only the first occurrence is used".into()])
        }
        Ok(upcoming) => Occurrences { upcoming, has_start: true, problems: vec![] },
        Err(e) => single(vec![format!("recurrence not expanded, only the first occurrence is used: {e}")]),
    }
}

fn expand(
    event: &EventVersion,
    tz: chrono_tz::Tz,
    start: DateTime<Utc>,
    duration: Duration,
    now: DateTime<Utc>,
    max: usize,
) -> Result<Vec<Occurrence>, String> {
    let rtz: rrule::Tz = tz.into();
    let local = |t: DateTime<Utc>| t.with_timezone(&rtz);
    let mut set = RRuleSet::new(local(start));
    if let Some(rule) = &event.rrule {
        let rule = normalise_until(rule, tz);
        let parsed: rrule::RRule<rrule::Unvalidated> = rule.parse().map_err(|e| format!("{e}"))?;
        set = set.rrule(parsed.validate(local(start)).map_err(|e| format!("{e}"))?);
    }
    for d in &event.rdates {
        set = set.rdate(local(*d));
    }
    for d in &event.exdates {
        set = set.exdate(local(*d));
    }
    // Occurrences that are still running at `now` started up to `duration` earlier.
    let after = local(now - duration - Duration::seconds(1));
    let limit = u16::try_from(max).unwrap_or(u16::MAX);
    // The rrule crate has panicked on damaged rules (a fuzzer found one); a rule it cannot
    // expand is a problem on the event, not a crash.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| set.after(after).all(limit)))
        .map_err(|_| "the recurrence rule could not be expanded".to_string())?;
    Ok(result
        .dates
        .into_iter()
        .map(|d| {
            let s = d.with_timezone(&Utc);
            Occurrence { slot: Some(s), start: s, end: s + duration }
        })
        .filter(|o| o.end > now)
        .collect())
}

/// rrule wants UNTIL in UTC when DTSTART has a zone; real invites write it as a DATE or
/// as local time. Both are read in the event's zone (end of day for a DATE).
fn normalise_until(rule: &str, tz: chrono_tz::Tz) -> String {
    rule.split(';')
        .map(|part| {
            let Some(value) = part.strip_prefix("UNTIL=").or_else(|| part.strip_prefix("until=")) else {
                return part.trim().to_string();
            };
            let value = value.trim();
            let local = if let Ok(d) = NaiveDate::parse_from_str(value, "%Y%m%d") {
                d.and_hms_opt(23, 59, 59)
            } else if !value.ends_with('Z') {
                NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S").ok()
            } else {
                None
            };
            match local.and_then(|l| tz.from_local_datetime(&l).earliest()) {
                Some(t) => format!("UNTIL={}", t.with_timezone(&Utc).format("%Y%m%dT%H%M%SZ")),
                None => format!("UNTIL={value}"),
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// A capture job the current state calls for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSpec {
    /// Identity of the occurrence within its event: the generated start for a series, None otherwise.
    pub slot: Option<DateTime<Utc>>,
    pub occurrence_start: DateTime<Utc>,
    pub occurrence_end: DateTime<Utc>,
    pub kind: PlanKind,
    pub run_at: DateTime<Utc>,
    pub provider: String,
    pub meeting_url: String,
    pub flags: Vec<Flag>,
    /// Everyone for whom this occurrence is eligible.
    pub requesters: Vec<String>,
}

/// The jobs an eligible decision asks for: one per occurrence that starts within the horizon
/// (or is under way). An ineligible decision asks for none.
pub fn desired_jobs(
    decision: &Decision,
    occurrences: &[Occurrence],
    conference: (&str, &str),
    requesters: &[String],
    scheduling: &SchedulingConfig,
    now: DateTime<Utc>,
) -> Vec<JobSpec> {
    let Some(plan) = decision.plan.as_ref().filter(|_| decision.eligible) else { return vec![] };
    let (provider, meeting_url) = conference;
    let horizon_end = now + Duration::days(scheduling.horizon_days);
    occurrences
        .iter()
        .filter(|o| o.start <= horizon_end)
        .map(|o| JobSpec {
            slot: o.slot,
            occurrence_start: o.start,
            occurrence_end: o.end,
            kind: plan.kind,
            run_at: eligibility::run_at(plan.kind, o.start, o.end, scheduling, now),
            provider: provider.to_string(),
            meeting_url: meeting_url.to_string(),
            flags: plan.flags.clone(),
            requesters: requesters.to_vec(),
        })
        .collect()
}

/// One occurrence of a series and the version that says what it is: the master, or the
/// override (RECURRENCE-ID) that moved or changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GovernedOccurrence<'a> {
    pub occurrence: Occurrence,
    pub version: &'a EventVersion,
}

/// The upcoming occurrences of a whole UID (RFC 5546 §2.1.5, design.md "Updates"): the
/// master's, with each override replacing the occurrence it names (or removing it when
/// cancelled). A cancelled master cancels the series with its overrides. Without a master,
/// each override stands alone. `overrides` are current states of RECURRENCE-ID keys.
pub fn series_occurrences<'a>(
    master: Option<&'a EventVersion>,
    overrides: &[&'a EventVersion],
    fallback_tz: chrono_tz::Tz,
    now: DateTime<Utc>,
    max: usize,
) -> (Vec<GovernedOccurrence<'a>>, Vec<String>) {
    let mut problems = Vec::new();
    let mut list: Vec<GovernedOccurrence> = Vec::new();
    if let Some(m) = master {
        if m.is_cancel() {
            return (vec![], problems);
        }
        let occurrences = upcoming_occurrences(m, fallback_tz, now, max);
        problems.extend(occurrences.problems);
        list.extend(occurrences.upcoming.into_iter().map(|occurrence| GovernedOccurrence { occurrence, version: m }));
    }
    for o in overrides {
        let Some(rid) = o.recurrence_id else { continue };
        list.retain(|g| g.occurrence.slot != Some(rid));
        let Some(start) = o.start.filter(|_| !o.is_cancel()) else { continue };
        let end = o.end.unwrap_or(start).max(start);
        if end > now {
            list.push(GovernedOccurrence { occurrence: Occurrence { slot: Some(rid), start, end }, version: o });
        }
    }
    list.sort_by_key(|g| (g.occurrence.start, g.occurrence.slot));
    (list, problems)
}

/// A job that exists and may still run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveJob {
    pub id: i64,
    pub slot: Option<DateTime<Utc>>,
    pub kind: PlanKind,
    pub occurrence_start: DateTime<Utc>,
    pub occurrence_end: DateTime<Utc>,
    pub run_at: DateTime<Utc>,
    pub meeting_url: String,
    pub flags: Vec<Flag>,
    pub requesters: Vec<String>,
    /// A recorder holds it: it is never moved under the recorder's feet.
    pub claimed: bool,
}

/// A job that ran to its end for its occurrence: `done`, or `failed` for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedJob {
    pub slot: Option<DateTime<Utc>>,
    pub kind: PlanKind,
    pub occurrence_start: DateTime<Utc>,
    pub meeting_url: String,
}

/// The desired jobs, less those whose occurrence already had its job run to the end: a
/// recorder that finished (or gave up) while the meeting is still on is not sent again by
/// the next plan. A meeting that moves or changes its link is new work and keeps its job.
pub fn without_finished(mut desired: Vec<JobSpec>, finished: &[FinishedJob]) -> Vec<JobSpec> {
    desired.retain(|d| {
        !finished.iter().any(|f| {
            f.slot == d.slot
                && f.kind == d.kind
                && f.occurrence_start == d.occurrence_start
                && f.meeting_url == d.meeting_url
        })
    });
    desired
}

/// What must change to get from the active jobs to the desired ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobChange {
    Create(JobSpec),
    Reschedule { id: i64, old_run_at: DateTime<Utc>, spec: JobSpec },
    Cancel { id: i64, kind: PlanKind, run_at: DateTime<Utc> },
}

/// Matches jobs by (slot, kind): a moved single meeting is rescheduled, not replaced.
/// A job whose occurrence has ended is not cancelled for being no longer planned (a cloud
/// recording is fetched after the end); it is still moved when its meeting moves.
/// A run time already due stays as it is (a meeting under way is due `now`, which moves
/// with every call). A claimed job is left alone unless its meeting moved, in which case
/// it is cancelled and a new job takes its place. Cancellations come first, so that a
/// replacement never meets the job it replaces.
pub fn diff_jobs(active: &[ActiveJob], desired: &[JobSpec], now: DateTime<Utc>) -> Vec<JobChange> {
    let mut changes: Vec<JobChange> = active
        .iter()
        .filter(|a| a.occurrence_end > now && !desired.iter().any(|d| d.slot == a.slot && d.kind == a.kind))
        .map(|a| JobChange::Cancel { id: a.id, kind: a.kind, run_at: a.run_at })
        .collect();
    let mut later = Vec::new();
    for spec in desired {
        let Some(a) = active.iter().find(|a| a.slot == spec.slot && a.kind == spec.kind) else {
            later.push(JobChange::Create(spec.clone()));
            continue;
        };
        let meeting_moved = a.occurrence_start != spec.occurrence_start || a.meeting_url != spec.meeting_url;
        if a.claimed {
            if meeting_moved {
                changes.push(JobChange::Cancel { id: a.id, kind: a.kind, run_at: a.run_at });
                later.push(JobChange::Create(spec.clone()));
            }
            continue;
        }
        let due_anyway = a.run_at <= now && spec.run_at <= now;
        let run_at = if due_anyway { a.run_at } else { spec.run_at };
        if meeting_moved || run_at != a.run_at || a.flags != spec.flags || a.requesters != spec.requesters {
            let spec = JobSpec { run_at, ..spec.clone() };
            later.push(JobChange::Reschedule { id: a.id, old_run_at: a.run_at, spec });
        }
    }
    changes.extend(later);
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eligibility::Plan;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn event(start: &str, end: &str) -> EventVersion {
        EventVersion {
            uid: "u".into(),
            method: Some("REQUEST".into()),
            start: Some(at(start)),
            end: Some(at(end)),
            timezone: Some("Europe/Berlin".into()),
            ..EventVersion::default()
        }
    }

    #[test]
    fn single_event_timing() {
        let e = event("2026-12-10T09:00:00Z", "2026-12-10T10:00:00Z");
        let tz = chrono_tz::UTC;
        let before = upcoming_occurrences(&e, tz, at("2026-12-01T00:00:00Z"), 10);
        assert_eq!(
            before.timing(),
            Timing::Next { start: at("2026-12-10T09:00:00Z"), end: at("2026-12-10T10:00:00Z") }
        );
        let during = upcoming_occurrences(&e, tz, at("2026-12-10T09:30:00Z"), 10);
        assert!(matches!(during.timing(), Timing::Next { .. }));
        let after = upcoming_occurrences(&e, tz, at("2026-12-10T10:00:00Z"), 10);
        assert_eq!(after.timing(), Timing::Ended);
        let mut no_start = e.clone();
        no_start.start = None;
        assert_eq!(upcoming_occurrences(&no_start, tz, at("2026-12-01T00:00:00Z"), 10).timing(), Timing::NoStart);
    }

    #[test]
    fn weekly_series_in_its_zone_across_dst() {
        // 09:00 Berlin every Monday: UTC+1 in winter, UTC+2 from 29 March 2027.
        let mut e = event("2027-03-15T08:00:00Z", "2027-03-15T09:00:00Z");
        e.rrule = Some("FREQ=WEEKLY;BYDAY=MO;UNTIL=20270405".into());
        e.exdates = vec![at("2027-03-22T08:00:00Z")];
        let o = upcoming_occurrences(&e, chrono_tz::UTC, at("2027-03-01T00:00:00Z"), 100);
        let starts: Vec<_> = o.upcoming.iter().map(|o| o.start).collect();
        assert_eq!(starts, vec![at("2027-03-15T08:00:00Z"), at("2027-03-29T07:00:00Z"), at("2027-04-05T07:00:00Z")]);
        assert!(o.problems.is_empty());
    }

    #[test]
    fn unbounded_series_is_capped() {
        let mut e = event("2027-01-04T08:00:00Z", "2027-01-04T09:00:00Z");
        e.rrule = Some("FREQ=DAILY".into());
        let o = upcoming_occurrences(&e, chrono_tz::UTC, at("2027-01-01T00:00:00Z"), 5);
        assert_eq!(o.upcoming.len(), 5);
    }

    #[test]
    fn broken_rule_falls_back_to_first_occurrence() {
        for rule in ["FREQ=SOMETIMES", "FREQ=DAILY;INTERVAL=0", "FREQ=DAILY;UNTIL=20260101T000000Z"] {
            let mut e = event("2027-01-04T08:00:00Z", "2027-01-04T09:00:00Z");
            e.rrule = Some(rule.into());
            let o = upcoming_occurrences(&e, chrono_tz::UTC, at("2027-01-01T00:00:00Z"), 5);
            assert_eq!(o.upcoming.len(), 1, "{rule}");
            assert_eq!(o.problems.len(), 1, "{rule}");
        }
    }

    fn eligible(kind: PlanKind) -> Decision {
        Decision {
            eligible: true,
            reasons: vec![],
            plan: Some(Plan { kind, run_at: at("2027-01-04T07:59:00Z"), flags: vec![] }),
            skipped: vec![],
        }
    }

    const TIMING: SchedulingConfig =
        SchedulingConfig { join_lead_seconds: 60, cloud_fetch_delay_seconds: 900, horizon_days: 7, tick_seconds: 30 };

    #[test]
    fn jobs_inside_the_horizon_only() {
        let mut e = event("2027-01-04T08:00:00Z", "2027-01-04T09:00:00Z");
        e.rrule = Some("FREQ=DAILY;COUNT=30".into());
        let now = at("2027-01-01T00:00:00Z");
        let o = upcoming_occurrences(&e, chrono_tz::UTC, now, 100);
        let who = ["alice@acme.com".to_string()];
        let jobs = desired_jobs(
            &eligible(PlanKind::BotJoin),
            &o.upcoming,
            ("zoom", "https://zoom.us/j/1"),
            &who,
            &TIMING,
            now,
        );
        // 4 Jan .. 7 Jan 08:00 start within 7 days of 1 Jan 00:00.
        assert_eq!(jobs.len(), 4);
        assert_eq!(jobs[0].run_at, at("2027-01-04T07:59:00Z"));
        assert_eq!(jobs[0].requesters, who);
        let fetch = desired_jobs(&eligible(PlanKind::CloudFetch), &o.upcoming, ("zoom", "u"), &who, &TIMING, now);
        assert_eq!(fetch[0].run_at, at("2027-01-04T09:15:00Z"));
    }

    #[test]
    fn diff_reschedules_creates_and_cancels() {
        let spec = |slot: Option<&str>, run: &str| JobSpec {
            slot: slot.map(at),
            occurrence_start: at(run),
            occurrence_end: at(run),
            kind: PlanKind::BotJoin,
            run_at: at(run),
            provider: "zoom".into(),
            meeting_url: "u".into(),
            flags: vec![],
            requesters: vec![],
        };
        let active = |id, slot: Option<&str>, run: &str| ActiveJob {
            id,
            slot: slot.map(at),
            kind: PlanKind::BotJoin,
            occurrence_start: at(run),
            occurrence_end: at(run) + Duration::hours(1),
            run_at: at(run),
            meeting_url: "u".into(),
            flags: vec![],
            requesters: vec![],
            claimed: false,
        };
        let now = at("2027-01-01T00:00:00Z");
        let diff_jobs = |a: &[ActiveJob], d: &[JobSpec]| super::diff_jobs(a, d, now);
        let moved = diff_jobs(&[active(1, None, "2027-01-04T08:00:00Z")], &[spec(None, "2027-01-05T08:00:00Z")]);
        assert!(matches!(moved.as_slice(), [JobChange::Reschedule { id: 1, .. }]));
        let same = diff_jobs(&[active(1, None, "2027-01-04T08:00:00Z")], &[spec(None, "2027-01-04T08:00:00Z")]);
        assert!(same.is_empty());
        let gone = diff_jobs(&[active(1, None, "2027-01-04T08:00:00Z")], &[]);
        assert!(matches!(gone.as_slice(), [JobChange::Cancel { id: 1, .. }]));
        let new = diff_jobs(&[], &[spec(Some("2027-01-04T08:00:00Z"), "2027-01-04T08:00:00Z")]);
        assert!(matches!(new.as_slice(), [JobChange::Create(_)]));

        // Already due on both sides (a meeting under way): nothing to move.
        let due = super::diff_jobs(
            &[active(1, None, "2027-01-04T08:00:00Z")],
            &[JobSpec { run_at: at("2027-01-04T08:30:00Z"), ..spec(None, "2027-01-04T08:00:00Z") }],
            at("2027-01-04T08:40:00Z"),
        );
        assert!(due.is_empty(), "{due:?}");

        let claimed = ActiveJob { claimed: true, ..active(1, None, "2027-01-04T08:00:00Z") };
        let same = diff_jobs(
            std::slice::from_ref(&claimed),
            &[JobSpec { flags: vec![Flag::AuthenticatedBot], ..spec(None, "2027-01-04T08:00:00Z") }],
        );
        assert!(same.is_empty(), "a claimed job is not touched for a flag: {same:?}");
        let moved = diff_jobs(&[claimed], &[spec(None, "2027-01-05T08:00:00Z")]);
        assert!(
            matches!(moved.as_slice(), [JobChange::Cancel { id: 1, .. }, JobChange::Create(_)]),
            "a claimed job whose meeting moved is replaced: {moved:?}"
        );

        let finished = FinishedJob {
            slot: None,
            kind: PlanKind::BotJoin,
            occurrence_start: at("2027-01-04T08:00:00Z"),
            meeting_url: "u".into(),
        };
        let again = without_finished(vec![spec(None, "2027-01-04T08:00:00Z")], std::slice::from_ref(&finished));
        assert!(again.is_empty(), "an occurrence whose job ran is not planned again");
        let moved = without_finished(vec![spec(None, "2027-01-05T08:00:00Z")], std::slice::from_ref(&finished));
        assert_eq!(moved.len(), 1, "a moved meeting is new work");
        let relinked = JobSpec { meeting_url: "v".into(), ..spec(None, "2027-01-04T08:00:00Z") };
        assert_eq!(without_finished(vec![relinked], &[finished]).len(), 1, "so is a new meeting link");

        // A cloud fetch waiting for its ended meeting is not cancelled by later planning.
        let ended = super::diff_jobs(&[active(1, None, "2027-01-04T08:00:00Z")], &[], at("2027-01-04T09:30:00Z"));
        assert!(ended.is_empty(), "{ended:?}");
    }

    #[test]
    fn overrides_move_or_remove_their_occurrence_and_a_master_cancel_ends_all() {
        let now = at("2027-01-01T00:00:00Z");
        let mut master = event("2027-01-04T08:00:00Z", "2027-01-04T09:00:00Z");
        master.rrule = Some("FREQ=DAILY;COUNT=3".into());
        let moved = EventVersion {
            recurrence_id: Some(at("2027-01-05T08:00:00Z")),
            ..event("2027-01-05T14:00:00Z", "2027-01-05T15:00:00Z")
        };
        let cancelled = EventVersion {
            recurrence_id: Some(at("2027-01-06T08:00:00Z")),
            method: Some("CANCEL".into()),
            ..event("2027-01-06T08:00:00Z", "2027-01-06T09:00:00Z")
        };
        let (list, _) = series_occurrences(Some(&master), &[&moved, &cancelled], chrono_tz::UTC, now, 100);
        let got: Vec<_> = list.iter().map(|g| (g.occurrence.slot, g.occurrence.start)).collect();
        assert_eq!(
            got,
            vec![
                (Some(at("2027-01-04T08:00:00Z")), at("2027-01-04T08:00:00Z")),
                (Some(at("2027-01-05T08:00:00Z")), at("2027-01-05T14:00:00Z")),
            ]
        );
        assert_eq!(list[1].version, &moved);

        // Exception only: the override stands alone under its RECURRENCE-ID.
        let (alone, _) = series_occurrences(None, &[&moved], chrono_tz::UTC, now, 100);
        assert_eq!(alone.len(), 1);
        assert_eq!(alone[0].occurrence.slot, Some(at("2027-01-05T08:00:00Z")));

        let mut cancel_all = master.clone();
        cancel_all.method = Some("CANCEL".into());
        let (none, _) = series_occurrences(Some(&cancel_all), &[&moved], chrono_tz::UTC, now, 100);
        assert!(none.is_empty());
    }
}
