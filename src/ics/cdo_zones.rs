//! Exchange's numeric time zone ids (`X-MICROSOFT-CDO-TZID:4`), for a VTIMEZONE
//! whose name no table knows and whose observances give no usable offset.
//!
//! Numbers and places from [MS-XWDCAL] §2.2.2.31 (PidNameCalendarTimeZoneId,
//! `urn:schemas:calendar:timezoneid`; 52 and above are not valid). Each is
//! mapped to the Windows zone id covering the places listed there, which then
//! resolves like any Windows name (rule 10).

use std::str::FromStr;

use chrono_tz::Tz;
use windows_timezones::WindowsTimezone;

/// Index = CDO id; the comment is [MS-XWDCAL]'s wording.
const WINDOWS_IDS: [&str; 52] = [
    "UTC",                            // 0 Coordinated Universal Time
    "Greenwich Standard Time",        // 1 Greenwich Mean Time (same as UTC)
    "GMT Standard Time",              // 2 Dublin, Edinburgh, Lisbon, London
    "Romance Standard Time",          // 3 Brussels, Copenhagen, Madrid, Paris, Vilnius
    "W. Europe Standard Time",        // 4 Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna
    "E. Europe Standard Time",        // 5 Eastern Europe
    "Central Europe Standard Time",   // 6 Belgrade, Pozsony, Budapest, Ljubljana, Prague
    "GTB Standard Time",              // 7 Athens, Istanbul, Minsk
    "E. South America Standard Time", // 8 Brasilia
    "Atlantic Standard Time",         // 9 Atlantic time (Canada)
    "Eastern Standard Time",          // 10 Eastern time
    "Central Standard Time",          // 11 Central time
    "Mountain Standard Time",         // 12 Mountain time
    "Pacific Standard Time",          // 13 Pacific time
    "Alaskan Standard Time",          // 14 Alaska
    "Hawaiian Standard Time",         // 15 Hawaii
    "UTC-11",                         // 16 Midway Island, Samoa (UTC-11:00)
    "New Zealand Standard Time",      // 17 Auckland, Wellington
    "E. Australia Standard Time",     // 18 Brisbane
    "Cen. Australia Standard Time",   // 19 Adelaide
    "Tokyo Standard Time",            // 20 Osaka, Sapporo, Tokyo
    "China Standard Time",            // 21 Hong Kong SAR
    "SE Asia Standard Time",          // 22 Bangkok, Hanoi, Jakarta
    "India Standard Time",            // 23 Mumbai, Kolkata, Chennai, New Delhi
    "Arabian Standard Time",          // 24 Abu Dhabi, Muscat
    "Iran Standard Time",             // 25 Tehran
    "Arab Standard Time",             // 26 Baghdad, Kuwait, Riyadh
    "Israel Standard Time",           // 27 Israel
    "Newfoundland Standard Time",     // 28 Newfoundland
    "Azores Standard Time",           // 29 Azores, Cape Verde Islands
    "UTC-02",                         // 30 Mid Atlantic (UTC-2:00)
    "Greenwich Standard Time",        // 31 Casablanca, Monrovia (UTC+0:00)
    "Argentina Standard Time",        // 32 Buenos Aires, Georgetown
    "SA Western Standard Time",       // 33 Caracas, La Paz
    "US Eastern Standard Time",       // 34 Indiana
    "SA Pacific Standard Time",       // 35 Bogota, Lima, Quito
    "Canada Central Standard Time",   // 36 Saskatchewan
    "Central Standard Time (Mexico)", // 37 Mexico City, Tegucigalpa
    "US Mountain Standard Time",      // 38 Arizona
    "Dateline Standard Time",         // 39 Eniwetok, Kwajalein (UTC-12:00)
    "Fiji Standard Time",             // 40 Fiji Islands, Kamchatka, Marshall Islands
    "Central Pacific Standard Time",  // 41 Magadan, Solomon Islands, New Caledonia
    "Tasmania Standard Time",         // 42 Hobart
    "West Pacific Standard Time",     // 43 Guam, Port Moresby
    "AUS Central Standard Time",      // 44 Darwin
    "China Standard Time",            // 45 Beijing, Chongqing, Urumqi
    "Bangladesh Standard Time",       // 46 Akmola, Almaty, Dhaka (UTC+6:00)
    "Pakistan Standard Time",         // 47 Islamabad, Karachi, Tashkent
    "Afghanistan Standard Time",      // 48 Kabul
    "Egypt Standard Time",            // 49 Cairo
    "South Africa Standard Time",     // 50 Harare, Pretoria
    "Russian Standard Time",          // 51 Moscow, St. Petersburg, Volgograd
];

/// The zone for an `X-MICROSOFT-CDO-TZID` value, when it is a known number.
pub(super) fn cdo_zone(value: &str) -> Option<Tz> {
    let id: usize = value.trim().parse().ok()?;
    let windows = WindowsTimezone::from_str(WINDOWS_IDS.get(id)?).ok()?;
    Tz::from_str(windows.tzdb_id()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_resolves() {
        for (id, name) in WINDOWS_IDS.iter().enumerate() {
            assert!(cdo_zone(&id.to_string()).is_some(), "{id} {name}");
        }
    }

    #[test]
    fn known_ids() {
        let cases = [
            ("4", Some(chrono_tz::Europe::Berlin)),
            (" 13 ", Some(chrono_tz::America::Los_Angeles)),
            ("2", Some(chrono_tz::Europe::London)),
            ("10", Some(chrono_tz::America::New_York)),
            ("23", Some(chrono_tz::Asia::Calcutta)),
            ("52", None),
            ("-1", None),
            ("Europe/Berlin", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(cdo_zone(value), want, "{value:?}");
        }
    }
}
