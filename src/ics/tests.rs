//! Whole-calendar tests: synthetic edge cases and the public corpus.

use chrono::{DateTime, Utc};

use super::*;
use crate::model::EventVersion;

fn part(bytes: &[u8]) -> CalendarPart {
    CalendarPart {
        bytes: bytes.to_vec(),
        content_type: "text/calendar".into(),
        method_param: None,
        charset: None,
        filename: None,
    }
}

fn parse(text: &str) -> ParsedCalendar {
    parse_calendar(&part(text.as_bytes()), chrono_tz::America::New_York, &IcsLimits::default())
}

fn utc(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|d| d.with_timezone(&Utc))
}

/// One VCALENDAR with one VEVENT holding `body` (lines joined with CRLF).
fn one_event(head: &str, body: &str) -> EventVersion {
    let text = format!("BEGIN:VCALENDAR\r\n{head}BEGIN:VEVENT\r\nUID:u1\r\n{body}END:VEVENT\r\nEND:VCALENDAR\r\n");
    let parsed = parse(&text);
    assert_eq!(parsed.events.len(), 1, "{text}\n{parsed:?}");
    parsed.events.into_iter().next().unwrap_or_else(|| unreachable!())
}

const CUSTOM_ZONE: &str = "BEGIN:VTIMEZONE\r\nTZID:Customized Time Zone\r\n\
    BEGIN:STANDARD\r\nDTSTART:16010101T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\n\
    RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10\r\nEND:STANDARD\r\n\
    BEGIN:DAYLIGHT\r\nDTSTART:16010101T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\n\
    RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n\
    BEGIN:VTIMEZONE\r\nTZID:India\\, home-made\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\n\
    TZOFFSETFROM:+0530\r\nTZOFFSETTO:+0530\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n\
    BEGIN:VTIMEZONE\r\nTZID:Lic\r\nX-LIC-LOCATION:Europe/Helsinki\r\nEND:VTIMEZONE\r\n\
    BEGIN:VTIMEZONE\r\nTZID:Stub\r\nEND:VTIMEZONE\r\n\
    BEGIN:VTIMEZONE\r\nTZID:Cdo\r\nX-MICROSOFT-CDO-TZID:4\r\nEND:VTIMEZONE\r\n\
    BEGIN:VTIMEZONE\r\nTZID:Cdo with rules\r\nX-MICROSOFT-CDO-TZID:13\r\nBEGIN:STANDARD\r\n\
    DTSTART:16010101T000000\r\nTZOFFSETFROM:+0530\r\nTZOFFSETTO:+0530\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n\
    BEGIN:VTIMEZONE\r\nTZID:History\r\n\
    BEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0000\r\nTZOFFSETTO:+0100\r\nDTSTART:19800316T020000\r\n\
    RDATE:19800316T020000\r\nRDATE:19810329T010000\r\nEND:DAYLIGHT\r\n\
    BEGIN:STANDARD\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0000\r\nDTSTART:19801026T030000\r\n\
    RDATE:19801026T030000\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n";

#[test]
fn times_in_vtimezone_zones() {
    let cases: &[(&str, &str, Option<&str>, usize)] = &[
        ("DTSTART;TZID=Customized Time Zone:20200609T090000", "2020-06-09T07:00:00Z", None, 0),
        ("DTSTART;TZID=\"Customized Time Zone\":20200109T090000", "2020-01-09T08:00:00Z", None, 0),
        // Around the 2020 changes (29 March, 25 October), and inside the spring gap.
        ("DTSTART;TZID=Customized Time Zone:20200329T013000", "2020-03-29T00:30:00Z", None, 0),
        ("DTSTART;TZID=Customized Time Zone:20200329T023000", "2020-03-29T01:30:00Z", None, 0),
        ("DTSTART;TZID=Customized Time Zone:20200329T033000", "2020-03-29T01:30:00Z", None, 0),
        ("DTSTART;TZID=Customized Time Zone:20201025T023000", "2020-10-25T00:30:00Z", None, 0),
        ("DTSTART;TZID=Customized Time Zone:20201025T033000", "2020-10-25T02:30:00Z", None, 0),
        ("DTSTART;TZID=\"India, home-made\":20200609T090000", "2020-06-09T03:30:00Z", None, 0),
        ("DTSTART;TZID=Lic:20200609T090000", "2020-06-09T06:00:00Z", Some("Europe/Helsinki"), 0),
        ("DTSTART;TZID=Stub:20200609T090000", "2020-06-09T13:00:00Z", Some("America/New_York"), 1),
        // A numeric X-MICROSOFT-CDO-TZID (4 = W. Europe) serves when there are no observances; rules come first.
        ("DTSTART;TZID=Cdo:20200609T090000", "2020-06-09T07:00:00Z", Some("Europe/Berlin"), 0),
        ("DTSTART;TZID=Cdo with rules:20200609T090000", "2020-06-09T03:30:00Z", None, 0),
        ("DTSTART;TZID=History:19790601T120000", "1979-06-01T12:00:00Z", None, 0),
        ("DTSTART;TZID=History:19800701T120000", "1980-07-01T11:00:00Z", None, 0),
        ("DTSTART;TZID=History:19801201T120000", "1980-12-01T12:00:00Z", None, 0),
        ("DTSTART;TZID=History:19810601T120000", "1981-06-01T11:00:00Z", None, 0),
    ];
    for (line, want, zone, nproblems) in cases {
        let event = one_event(CUSTOM_ZONE, &format!("{line}\r\n"));
        assert_eq!(event.start, utc(want), "{line}");
        assert_eq!(event.timezone.as_deref(), *zone, "{line}");
        assert_eq!(event.problems.len(), *nproblems, "{line}: {:?}", event.problems);
    }
}

#[test]
fn start_end_and_all_day() {
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, bool);
    let cases: &[Case] = &[
        (
            "DTSTART;VALUE=DATE:20200609\r\nDTEND;VALUE=DATE:20200611\r\n",
            Some("2020-06-09T04:00:00Z"),
            Some("2020-06-11T04:00:00Z"),
            true,
        ),
        ("DTSTART;VALUE=DATE:20200609\r\n", Some("2020-06-09T04:00:00Z"), Some("2020-06-10T04:00:00Z"), true),
        ("DTSTART:20200609\r\nDTEND:20200610\r\n", Some("2020-06-09T04:00:00Z"), Some("2020-06-10T04:00:00Z"), true),
        (
            "DTSTART;VALUE=DATE:20200612T000000\r\nDTEND;VALUE=DATE:20200615T000000\r\n",
            Some("2020-06-12T04:00:00Z"),
            Some("2020-06-15T04:00:00Z"),
            true,
        ),
        // A whole-day DURATION counts local days: the 2020-11-01 change makes that day 25 hours.
        (
            "DTSTART;VALUE=DATE:20201031\r\nDURATION:P2D\r\n",
            Some("2020-10-31T04:00:00Z"),
            Some("2020-11-02T05:00:00Z"),
            true,
        ),
        (
            "DTSTART:20200609T100000Z\r\nDURATION:PT1H30M\r\n",
            Some("2020-06-09T10:00:00Z"),
            Some("2020-06-09T11:30:00Z"),
            false,
        ),
        (
            "DTSTART:20200609T100000Z\r\nDTEND:20200609T120000Z\r\nDURATION:PT1H\r\n",
            Some("2020-06-09T10:00:00Z"),
            Some("2020-06-09T12:00:00Z"),
            false,
        ),
        ("DTSTART:20200609T100000Z\r\n", Some("2020-06-09T10:00:00Z"), Some("2020-06-09T10:00:00Z"), false),
        ("DTSTART:20200609T100000\r\n", Some("2020-06-09T14:00:00Z"), Some("2020-06-09T14:00:00Z"), false),
        ("DTEND:20200609T100000Z\r\n", None, Some("2020-06-09T10:00:00Z"), false),
        ("DTSTART:2020060\r\n", None, None, false),
    ];
    for (body, start, end, all_day) in cases {
        let event = one_event("", body);
        assert_eq!(event.start, start.and_then(utc), "{body}");
        assert_eq!(event.end, end.and_then(utc), "{body}");
        assert_eq!(event.all_day, *all_day, "{body}");
    }
}

#[test]
fn fields() {
    let event = one_event(
        "METHOD:request\r\n",
        "SEQUENCE:99999999999999999999\r\nX-MICROSOFT-CDO-APPT-SEQUENCE:4\r\n\
         DTSTAMP:20200101T101010\r\nstatus:tentative\r\n\
         SUMMARY:First\\, one\r\nSUMMARY:Second\r\n\
         DESCRIPTION;ENCODING=QUOTED-PRINTABLE;CHARSET=UTF-8:Caf=C3=A9 =\r\nau lait\r\n\
         LOCATION:\r\n\
         ORGANIZER;CN=Boss:MAILTO:Boss@Example.com\r\n\
         ATTENDEE:mailto:A@x.org\r\nATTENDEE:a@x.org\r\nATTENDEE:mailto:\r\n\
         RRULE;TZID=Eastern:FREQ=DAILY;COUNT=5\r\n\
         RECURRENCE-ID;VALUE=DATE:20200102\r\n\
         EXDATE:20200103T100000Z,20200104T100000Z\r\nEXDATE;TZID=Europe/Berlin:20200105T100000\r\n\
         RDATE;VALUE=PERIOD:20200106T100000Z/PT1H\r\n\
         BEGIN:VALARM\r\nDESCRIPTION:Reminder\r\nEND:VALARM\r\n",
    );
    assert_eq!(event.sequence, 4);
    assert_eq!(event.problems.len(), 1, "{:?}", event.problems);
    assert_eq!(event.method.as_deref(), Some("REQUEST"));
    assert_eq!(event.status.as_deref(), Some("TENTATIVE"));
    assert_eq!(event.dtstamp, utc("2020-01-01T10:10:10Z"));
    assert_eq!(event.summary.as_deref(), Some("First, one"));
    assert_eq!(event.description.as_deref(), Some("Café au lait"));
    assert_eq!(event.location, None);
    assert_eq!(event.organizer.map(|o| (o.email, o.name)), Some(("boss@example.com".into(), Some("Boss".into()))));
    assert_eq!(event.attendees, vec!["a@x.org".to_string()]);
    assert_eq!(event.rrule.as_deref(), Some("FREQ=DAILY;COUNT=5"));
    assert_eq!(event.recurrence_id, utc("2020-01-02T05:00:00Z"));
    let exdates: Vec<_> = ["2020-01-03T10:00:00Z", "2020-01-04T10:00:00Z", "2020-01-05T09:00:00Z"]
        .iter()
        .filter_map(|t| utc(t))
        .collect();
    assert_eq!(event.exdates, exdates);
    assert_eq!(event.rdates, utc("2020-01-06T10:00:00Z").into_iter().collect::<Vec<_>>());
}

#[test]
fn calendar_structure() {
    let two_calendars = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:a\nEND:VEVENT\nMETHOD:CANCEL\nEND:VCALENDAR\n\
        BEGIN:VCALENDAR\nMETHOD:REQUEST\nBEGIN:VFREEBUSY\nBEGIN:VEVENT\nUID:b\nEND:VEVENT\nEND:VFREEBUSY\nEND:VCALENDAR\n\
        trailing text: after the end\n";
    let parsed = parse(two_calendars);
    let got: Vec<_> = parsed.events.iter().map(|e| (e.uid.as_str(), e.method.as_deref())).collect();
    assert_eq!(got, [("a", Some("CANCEL")), ("b", Some("REQUEST"))]);

    let calendar_uid = parse("BEGIN:VCALENDAR\rUID:cal-uid\rBEGIN:VEVENT\rSUMMARY:x\rEND:VEVENT\rEND:VCALENDAR");
    assert_eq!(calendar_uid.events.first().map(|e| e.uid.as_str()), Some("cal-uid"));

    let no_uid =
        parse("BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:x\nEND:VEVENT\nBEGIN:VEVENT\nUID: \nEND:VEVENT\nEND:VCALENDAR");
    assert_eq!((no_uid.events.len(), no_uid.events_without_uid), (0, 2));

    let mut with_param = part(b"BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:a\nEND:VEVENT\nEND:VCALENDAR");
    with_param.method_param = Some("publish".into());
    let parsed = parse_calendar(&with_param, chrono_tz::UTC, &IcsLimits::default());
    assert_eq!(parsed.events.first().and_then(|e| e.method.as_deref()), Some("PUBLISH"));
}

#[test]
fn limits() {
    let events = "BEGIN:VEVENT\nUID:x\nEND:VEVENT\n".repeat(5);
    let limits = IcsLimits { max_events: 3, max_line_bytes: 40 };
    let text = format!("BEGIN:VCALENDAR\n{events}END:VCALENDAR");
    let parsed = parse_calendar(&part(text.as_bytes()), chrono_tz::UTC, &limits);
    assert_eq!(parsed.events.len(), 3);
    assert_eq!(parsed.problems.len(), 1, "{:?}", parsed.problems);

    let long =
        format!("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x\nDESCRIPTION:{}\nEND:VEVENT\nEND:VCALENDAR", "x".repeat(100));
    let parsed = parse_calendar(&part(long.as_bytes()), chrono_tz::UTC, &limits);
    assert_eq!(parsed.events.first().map(|e| e.description.clone()), Some(None));
    assert_eq!(parsed.problems.len(), 1, "{:?}", parsed.problems);
}

#[test]
fn hostile_input_does_not_panic() {
    let inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\xff\xfe".to_vec(),
        b"\xff\xfe\x00".to_vec(),
        b"BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x\nDTSTART;TZID=\"unterminated\nDTEND;TZID=:99999999T999999\nDURATION:P99999999999999999W\nEND:VEVENT".to_vec(),
        b"BEGIN:VEVENT\nUID:x\nDTSTART:00000101T000000Z\nDTEND;VALUE=DATE:99991231\nDURATION:P9999999W\nRDATE:,,,\nEXDATE;TZID=\"(UTC+99:99)\":20200101T000000\nEND:VEVENT".to_vec(),
        b"BEGIN:VEVENT\nUID:x\nDTSTART;VALUE=DATE:99991231\nDURATION:P7D\nEND:VEVENT".to_vec(),
        b"BEGIN:VEVENT\nUID:x\nDTSTART;VALUE=DATE:99991231\nEND:VEVENT".to_vec(),
        b":\n;\n\\\n\"\n=\nBEGIN:\nEND:\n".to_vec(),
        (0u8..=255).cycle().take(5000).collect(),
    ];
    for input in inputs {
        let _ = parse_calendar(&part(&input), chrono_tz::Pacific::Apia, &IcsLimits::default());
    }
}

/// Inputs shaped to make a quadratic pass slow; they must stay quick.
#[test]
fn long_inputs_stay_linear() {
    let many_schemes = format!("BEGIN:VEVENT\nUID:x\nDESCRIPTION:{}\nEND:VEVENT", "http:// ".repeat(30_000));
    let qp_run = format!("BEGIN:VEVENT\nUID:x\nX;ENCODING=QUOTED-PRINTABLE;A=\n{}END:VEVENT", "C=\n".repeat(100_000));
    let exdates = format!("BEGIN:VEVENT\nUID:x\nEXDATE;TZID=Nowhere:{}\nEND:VEVENT", "20200101T000000,".repeat(10_000));
    let limits = IcsLimits { max_events: 10, max_line_bytes: 1 << 20 };
    for input in [many_schemes, qp_run, exdates] {
        let parsed = parse_calendar(&part(input.as_bytes()), chrono_tz::UTC, &limits);
        assert_eq!(parsed.events.len(), 1);
    }
}

/// Corpus files and what a reader must find in them (checked by hand against each file).
#[test]
fn corpus_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/public");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("skipped: corpus folder {} not found", dir.display());
        return;
    };
    let mut read = 0;
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        if path.extension().is_some_and(|e| e == "ics") {
            let bytes = std::fs::read(&path).unwrap_or_default();
            let parsed = parse_calendar(&part(&bytes), chrono_tz::America::New_York, &IcsLimits::default());
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            check_known(&name, &parsed);
            read += 1;
        }
    }
    assert!(read >= 40, "only {read} corpus files read");
}

fn check_known(name: &str, parsed: &ParsedCalendar) {
    let first = parsed.events.first();
    let start = first.and_then(|e| e.start);
    match name {
        "nylas__google-cancel.ics" => {
            assert_eq!(first.and_then(|e| e.method.as_deref()), Some("CANCEL"));
            assert_eq!(first.map(|e| e.sequence), Some(1));
            assert_eq!(start, utc("2015-04-01T14:00:00Z"));
        }
        "icalendar-py__exchange2010-pacific-quoted-tzid.ics" => {
            assert_eq!(first.and_then(|e| e.timezone.as_deref()), Some("America/Los_Angeles"));
            assert_eq!(start, utc("2017-02-24T20:00:00Z"));
            assert_eq!(first.and_then(|e| e.end), utc("2017-02-24T20:30:00Z"));
        }
        "tine20__campusnet-utf16le.ics" => {
            assert_eq!(parsed.events.len(), 15);
            assert_eq!(first.map(|e| e.uid.as_str()), Some("370555012409828"));
            assert_eq!(first.and_then(|e| e.summary.as_deref()), Some("Übungen zu Interaktionsdesign"));
            assert_eq!(start, utc("2019-07-02T10:15:00Z"));
        }
        "libical__rfc2446-examples-all-methods.ics" => {
            assert_eq!(parsed.events.len(), 42);
            let mut methods: Vec<&str> = parsed.events.iter().filter_map(|e| e.method.as_deref()).collect();
            methods.sort_unstable();
            methods.dedup();
            assert_eq!(
                methods,
                ["ADD", "CANCEL", "COUNTER", "DECLINECOUNTER", "PUBLISH", "REFRESH", "REPLY", "REQUEST"]
            );
        }
        "node-ical__exchange-windows-vtimezones.ics" => {
            assert_eq!(parsed.events.len(), 4);
            let quoted = parsed.events.get(1);
            assert_eq!(quoted.and_then(|e| e.start), utc("2020-06-09T07:00:00Z"));
            assert_eq!(quoted.and_then(|e| e.timezone.as_deref()), Some("Europe/Berlin"));
            let exdates = parsed.events.get(3).map(|e| e.exdates.clone()).unwrap_or_default();
            assert_eq!((exdates.len(), exdates.first().copied()), (6, utc("2020-07-21T19:00:00Z")));
        }
        "icalendar-py__podio-request-tab-folding-altrep.ics" => {
            assert_eq!(first.map(|e| e.uid.as_str()), Some("20055546456446"));
            assert_eq!(start, utc("2022-02-22T18:30:00Z"));
            let url = "https://podio.com/xxxxxxyyyyyy/zpodio-testgelande/apps/calendar/items/5";
            assert_eq!(first.and_then(|e| e.links.first()).map(|l| l.url.as_str()), Some(url));
        }
        "ical4j__yahoo-request-tzid-and-z.ics" => {
            assert_eq!(start, utc("2014-01-30T14:00:00Z"));
            assert_eq!(first.and_then(|e| e.timezone.as_deref()), Some("UTC"));
            let organizer = first.and_then(|e| e.organizer.clone());
            assert_eq!(
                organizer.map(|o| (o.email, o.sent_by)),
                Some(("abc@yahoo.com".into(), Some("abc@yahoo.com".into())))
            );
        }
        "calcard__exchange-teams-recurring-request.ics" => {
            let link = first.and_then(|e| e.links.first());
            assert_eq!(link.map(|l| l.source.as_str()), Some("X-MICROSOFT-SKYPETEAMSMEETINGURL"));
            assert!(link.is_some_and(|l| l.url.starts_with("https://teams.microsoft.com/l/meetup-join/19%3afe1f00c87d7044e3a73231bb01b1d749%40thread.tacv2/1605785353833?context=%7b%12Tid")));
            assert!(link.is_some_and(|l| l.url.ends_with("d13eeeb0fc6f%22%7d")));
            assert_eq!(start, utc("2020-11-24T10:00:00Z"));
            assert_eq!(first.and_then(|e| e.rrule.as_deref()), Some("FREQ=DAILY;UNTIL=20201126T100000Z;INTERVAL=2"));
        }
        "tine20__exchange-cdo-broken-folding.ics" => {
            let uid = "040000008200E00074C5B7101A82E00800000000F04200929A03CD01000000000000000010000000A9E90330A8A0F547903AAFDBDD6A0D26";
            assert_eq!(first.map(|e| e.uid.as_str()), Some(uid));
            assert_eq!(first.map(|e| e.attendees.clone()), Some(vec!["name@example.net".to_string()]));
            assert_eq!(start, utc("2012-03-16T17:00:00Z"));
            assert_eq!(first.and_then(|e| e.description.clone()), None);
        }
        "nylas__icloud-request-allday.ics" => {
            assert_eq!(
                first.and_then(|e| e.organizer.as_ref()).map(|o| o.email.as_str()),
                Some("benbitdiddle@icloud.com")
            );
            assert_eq!((start, first.map(|e| e.all_day)), (utc("2015-03-16T04:00:00Z"), Some(true)));
        }
        "nylas__google-huge-sequence.ics" => assert_eq!(first.map(|e| e.sequence), Some(1_407_317_367_304)),
        "node-ical__owa-undefined-display-tzids.ics" => assert_eq!(parsed.events_without_uid, 4),
        "ical4j__exchange-cdo-escaped-comma-tzid.ics" => assert_eq!(start, utc("2004-10-12T05:30:00Z")),
        "ical4j__lotus-notes6-rrule-with-tzid.ics" => assert_eq!(start, utc("2005-04-11T13:00:00Z")),
        "node-ical__exchange-tzid-leading-space.ics" => {
            assert_eq!(parsed.events.get(1).and_then(|e| e.start), utc("2024-01-08T10:00:00Z"));
        }
        _ => {}
    }
}

#[test]
fn outlook_all_day_flag_on_date_times() {
    // Outlook writes all-day events as midnight-to-midnight DATE-TIMEs in its zone; rule 9
    // reads them as the tenant's local midnights (America/New_York here).
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, bool);
    let cases: &[Case] = &[
        (
            "X-MICROSOFT-CDO-ALLDAYEVENT:TRUE\r\nDTSTART;TZID=W. Europe Standard Time:20200609T000000\r\n\
             DTEND;TZID=W. Europe Standard Time:20200611T000000\r\n",
            Some("2020-06-09T04:00:00Z"),
            Some("2020-06-11T04:00:00Z"),
            true,
        ),
        // Midnight UTC stamps: the nearest midnight names the day.
        (
            "X-MICROSOFT-CDO-ALLDAYEVENT:true\r\nDTSTART:20200608T220000Z\r\nDTEND:20200609T220000Z\r\n",
            Some("2020-06-09T04:00:00Z"),
            Some("2020-06-10T04:00:00Z"),
            true,
        ),
        // No end, or an end not after the start: one day.
        (
            "X-MICROSOFT-CDO-ALLDAYEVENT:TRUE\r\nDTSTART;TZID=Europe/Berlin:20200609T000000\r\n",
            Some("2020-06-09T04:00:00Z"),
            Some("2020-06-10T04:00:00Z"),
            true,
        ),
        (
            "X-MICROSOFT-CDO-ALLDAYEVENT:TRUE\r\nDTSTART;TZID=Europe/Berlin:20200609T000000\r\nDURATION:P3D\r\n",
            Some("2020-06-09T04:00:00Z"),
            Some("2020-06-12T04:00:00Z"),
            true,
        ),
        (
            "X-MICROSOFT-CDO-ALLDAYEVENT:FALSE\r\nDTSTART;TZID=Europe/Berlin:20200609T000000\r\n\
             DTEND;TZID=Europe/Berlin:20200610T000000\r\n",
            Some("2020-06-08T22:00:00Z"),
            Some("2020-06-09T22:00:00Z"),
            false,
        ),
        // The flag alone, with no start, makes nothing all-day.
        ("X-MICROSOFT-CDO-ALLDAYEVENT:TRUE\r\n", None, None, false),
    ];
    for (body, start, end, all_day) in cases {
        let event = one_event("", body);
        assert_eq!(event.start, start.and_then(utc), "{body}");
        assert_eq!(event.end, end.and_then(utc), "{body}");
        assert_eq!(event.all_day, *all_day, "{body}");
        if *all_day {
            assert_eq!(event.timezone.as_deref(), Some("America/New_York"), "{body}");
        }
    }
}

#[test]
fn all_day_series_override_ids_match_their_occurrence() {
    // As node-ical__exchange-allday-moved-occurrence.ics: an all-day weekly series whose
    // override names its occurrence by Berlin midnight. The id must equal the occurrence the
    // series generates: local midnight of that day in the default zone.
    let text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:s\r\nRRULE:FREQ=WEEKLY;BYDAY=TU,TH\r\n\
        DTSTART;VALUE=DATE:20260219\r\nDTEND;VALUE=DATE:20260220\r\n\
        EXDATE;TZID=W. Europe Standard Time:20260303T000000\r\nEND:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:s\r\nRECURRENCE-ID;TZID=W. Europe Standard Time:20260226T000000\r\n\
        DTSTART;VALUE=DATE:20260227\r\nDTEND;VALUE=DATE:20260228\r\nEND:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:s\r\nRECURRENCE-ID:20260305T000000\r\n\
        DTSTART:20260305T150000Z\r\nDTEND:20260305T160000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let parsed = parse(text);
    let ids: Vec<_> = parsed.events.iter().map(|e| e.recurrence_id).collect();
    assert_eq!(ids, [None, utc("2026-02-26T05:00:00Z"), utc("2026-03-05T05:00:00Z")]);
    assert_eq!(
        parsed.events.first().map(|e| e.exdates.clone()),
        Some(utc("2026-03-03T05:00:00Z").into_iter().collect())
    );
    // A timed series keeps its ids as written.
    let timed = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:t\r\nDTSTART;TZID=Europe/Berlin:20260219T100000\r\n\
        END:VEVENT\r\nBEGIN:VEVENT\r\nUID:t\r\nRECURRENCE-ID;TZID=Europe/Berlin:20260226T100000\r\n\
        DTSTART;VALUE=DATE:20260227\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let ids: Vec<_> = parse(timed).events.iter().map(|e| e.recurrence_id).collect();
    assert_eq!(ids, [None, utc("2026-02-26T09:00:00Z")]);
    // An all-day override sent without its series is read its own way.
    let alone = one_event("", "RECURRENCE-ID;TZID=Europe/Berlin:20260226T000000\r\nDTSTART;VALUE=DATE:20260227\r\n");
    assert_eq!(alone.recurrence_id, utc("2026-02-26T05:00:00Z"));
}

#[test]
fn what_could_not_be_read_is_reported() {
    // As tests/fixtures/bad-calendar.eml: a line that is no property, and a VEVENT with no END.
    let parsed = parse("BEGIN:VCALENDAR\nthis is not ; a calendar :: at all\nBEGIN:VEVENT\nEND:VCALENDAR\n");
    assert_eq!(
        parsed.problems,
        [
            "1 lines without a property shape skipped",
            "1 BEGIN:VEVENT without END:VEVENT; closed where the enclosing component ends",
        ]
    );
    // Broken folding is repaired, and said.
    let parsed = parse("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:0400\n0100AA\nEND:VEVENT\nEND:VCALENDAR\n");
    assert_eq!(parsed.events.first().map(|e| e.uid.as_str()), Some("04000100AA"));
    assert_eq!(parsed.problems.len(), 1, "{:?}", parsed.problems);
    // An unreadable date costs that field and is reported in the version.
    let event = one_event("", "DTSTART:20200609T100000Z\r\nDTEND:199706211T173000Z\r\n");
    assert_eq!(event.problems, ["unreadable DTEND value \"199706211T173000Z\""]);
    // A clean calendar reports nothing.
    let clean = parse(
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a\r\nDTSTART:20200609T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    );
    assert!(clean.problems.is_empty() && clean.events.iter().all(|e| e.problems.is_empty()), "{clean:?}");
}

#[test]
fn declared_charsets_are_used() {
    let body = b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a\r\nSUMMARY:Spotkanie w \xb3\xf3dce\r\n\
        LOCATION:\x93Caf\xe9\x94\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let read = |charset: Option<&str>| {
        let mut p = part(body);
        p.charset = charset.map(str::to_string);
        let parsed = parse_calendar(&p, chrono_tz::UTC, &IcsLimits::default());
        let event = parsed.events.into_iter().next();
        (event.and_then(|e| e.summary), parsed.problems)
    };
    let (summary, problems) = read(Some("iso-8859-2"));
    assert_eq!(summary.as_deref(), Some("Spotkanie w \u{142}\u{f3}dce"));
    assert_eq!(problems, ["2 lines not UTF-8 (charset: iso-8859-2); read as ISO-8859-2"]);
    // Undeclared: windows-1252, whose 0x93/0x94 are curly quotes.
    let mut p = part(body);
    p.charset = None;
    let parsed = parse_calendar(&p, chrono_tz::UTC, &IcsLimits::default());
    assert_eq!(parsed.events.first().and_then(|e| e.location.as_deref()), Some("\u{201C}Caf\u{e9}\u{201D}"));
    assert_eq!(parsed.problems, ["2 lines not UTF-8 (charset: none declared); read as windows-1252"]);
}

#[test]
fn quoted_printable_named_after_a_fold() {
    // vCalendar 1.0: the encoding parameter folded onto the next line, and the value's soft
    // breaks with no leading space; CHARSET says how the decoded bytes are read.
    let event = one_event(
        "",
        "SUMMARY;CHARSET=ISO-8859-1;\r\n ENCODING=QUOTED-PRINTABLE:Gr=FC=DFe aus =\r\nK=F6ln\r\nDTSTART:20200609T100000Z\r\n",
    );
    assert_eq!(event.summary.as_deref(), Some("Grüße aus Köln"));
    assert_eq!(event.start, utc("2020-06-09T10:00:00Z"));
}
