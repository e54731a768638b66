//! 20,000 randomly mutated copies of the corpus files go through `explain`: no panic,
//! no hang, no unbounded memory (issue 3, "Done when").
//!
//! The mutations are reproducible: a fixed seed drives a xorshift PRNG, and copy `i`
//! mutates corpus file `i % files`. Work per input is bounded by construction — every
//! copy is at most `MAX_GROWTH` bytes longer than its original, and `explain` itself
//! caps MIME depth and parts, calendar size, events and occurrences — so no per-input
//! timer is asserted; the test's total runtime is the signal (printed, with the slowest
//! input, so a regression shows). A panicking input is written to the temp folder and
//! named in the failure.
//!
//! `MUTATIONS=N` changes the number of copies, `MUTATION_SEED=S` the seed.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use invited::pipeline::explain;

const COPIES: usize = 20_000;
const SEED: u64 = 0x1d7e_c0de_2027_0003;
/// A mutated copy never grows more than this beyond its original.
const MAX_GROWTH: usize = 64 * 1024;
/// Bytes that mean something to MIME, quoted-printable or iCalendar.
const SPECIAL: [u8; 8] = [b'\r', b'\n', b'=', b':', b';', b'"', 0, 0xFF];

/// xorshift64* (Vigna): small, fast, good enough to pick mutations.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
}

/// One mutation of `data`, in place.
fn mutate_once(rng: &mut XorShift, data: &mut Vec<u8>) {
    let at = |rng: &mut XorShift, data: &Vec<u8>| rng.below(data.len() + 1);
    match rng.below(9) {
        // Flip one to eight bits of a byte.
        0 => {
            if !data.is_empty() {
                let i = rng.below(data.len());
                data[i] ^= rng.byte() | 1;
            }
        }
        // Overwrite a byte with any value.
        1 => {
            if !data.is_empty() {
                let i = rng.below(data.len());
                data[i] = rng.byte();
            }
        }
        // Truncate.
        2 => {
            let len = at(rng, data);
            data.truncate(len);
        }
        // Duplicate a slice somewhere else.
        3 => {
            if !data.is_empty() {
                let start = rng.below(data.len());
                let len = 1 + rng.below((data.len() - start).min(2048));
                let slice = data[start..start + len].to_vec();
                let to = at(rng, data);
                data.splice(to..to, slice);
            }
        }
        // Delete a slice.
        4 => {
            if !data.is_empty() {
                let start = rng.below(data.len());
                let len = 1 + rng.below((data.len() - start).min(512));
                data.drain(start..start + len);
            }
        }
        // Insert one special byte.
        5 | 6 => {
            let b = SPECIAL[rng.below(SPECIAL.len())];
            let to = at(rng, data);
            data.insert(to, b);
        }
        // Overwrite a byte with a special one.
        7 => {
            if !data.is_empty() {
                let i = rng.below(data.len());
                data[i] = SPECIAL[rng.below(SPECIAL.len())];
            }
        }
        // A long run: of a special byte, a letter, a space or a tab.
        _ => {
            const RUN: [u8; 4] = [b'A', b' ', b'\t', b'-'];
            let b = if rng.below(2) == 0 { SPECIAL[rng.below(SPECIAL.len())] } else { RUN[rng.below(RUN.len())] };
            let len = 64 << rng.below(8); // 64 B … 8 KiB
            let to = at(rng, data);
            data.splice(to..to, std::iter::repeat_n(b, len));
        }
    }
}

/// A mutated copy: one to four mutations, now and then up to sixteen.
fn mutated(rng: &mut XorShift, original: &[u8]) -> Vec<u8> {
    let mut data = original.to_vec();
    let count = if rng.below(8) == 0 { 1 + rng.below(16) } else { 1 + rng.below(4) };
    for _ in 0..count {
        mutate_once(rng, &mut data);
    }
    data.truncate(original.len() + MAX_GROWTH);
    data
}

fn corpus() -> Option<Vec<(String, Vec<u8>)>> {
    let dir = common::shared("corpus/public")?;
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".eml") || n.ends_with(".ics"))
        .collect();
    names.sort();
    let files = names.into_iter().map(|n| (n.clone(), std::fs::read(dir.join(&n)).expect("corpus file"))).collect();
    Some(files)
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

#[test]
fn mutated_corpus_files_never_panic() {
    let Some(files) = corpus() else { return common::skip_or_fail("../shared/corpus/public is missing") };
    assert!(!files.is_empty(), "the corpus folder holds no .eml or .ics file");
    let copies = env_number("MUTATIONS").map_or(COPIES, |n| n as usize);
    let seed = env_number("MUTATION_SEED").unwrap_or(SEED);
    let config = common::config();
    let rcpt = vec!["acme@assistant.example.com".to_string()];
    let now = common::now();
    let mut rng = XorShift::new(seed);

    // Panics are caught (and counted) so that one bad input names itself and the run goes on.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let (mut bytes, mut with_events) = (0usize, 0usize);
    let mut slowest = (Duration::ZERO, 0usize);
    let mut failures: Vec<String> = Vec::new();
    for i in 0..copies {
        let (name, original) = &files[i % files.len()];
        let input = mutated(&mut rng, original);
        bytes += input.len();
        let one = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let e = explain(&config, &input, &rcpt, now);
            serde_json::to_string(&e).expect("an explanation serialises");
            e.events.len()
        }));
        let took = one.elapsed();
        if took > slowest.0 {
            slowest = (took, i);
        }
        match outcome {
            Ok(n) => with_events += usize::from(n > 0),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let path = save(i, name, &input);
                failures.push(format!("copy {i} of {name} (saved to {}): {message}", path.display()));
            }
        }
    }
    std::panic::set_hook(hook);
    let total = started.elapsed();
    let (slow_time, slow_i) = slowest;
    eprintln!(
        "mutations: {copies} copies ({} MB) of {} files, seed {seed:#x}, in {:.1} s ({:.0}/s); \
         {with_events} still gave events; slowest: copy {slow_i} of {} in {} ms",
        bytes / 1_000_000,
        files.len(),
        total.as_secs_f64(),
        copies as f64 / total.as_secs_f64().max(1e-9),
        files[slow_i % files.len()].0,
        slow_time.as_millis(),
    );
    assert!(failures.is_empty(), "{} of {copies} mutated copies panicked:\n{}", failures.len(), failures.join("\n"));
}

/// Keeps a panicking input for reproduction: `cargo run -- explain <file>`.
fn save(i: usize, name: &str, input: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("invited-mutation-{i}-{name}"));
    let _ = std::fs::write(&path, input);
    path
}

#[test]
fn mutations_are_reproducible() {
    let original = b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let run = |seed| {
        let mut rng = XorShift::new(seed);
        (0..50).map(|_| mutated(&mut rng, original)).collect::<Vec<_>>()
    };
    assert_eq!(run(SEED), run(SEED));
    assert_ne!(run(SEED), run(SEED + 1));
    assert!(run(SEED).iter().all(|m| m.len() <= original.len() + MAX_GROWTH));
}

/// Inputs the fuzz target crashed on (`tests/fixtures/fuzz/`), and their minimal forms.
#[test]
fn fuzz_crashes_stay_fixed() {
    let config = common::config();
    let rcpt = vec!["acme@assistant.example.com".to_string()];
    let dir = common::fixtures().join("fuzz");
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/fuzz")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ics" || x == "eml"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).expect("fuzz fixture")))
        .collect();
    assert!(!inputs.is_empty(), "no fuzz regression inputs in {}", dir.display());
    // A non-ASCII BYDAY panicked in the rrule crate.
    let minimal = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:r@x\r\nDTSTART:20270110T100000Z\r\n\
                   RRULE:FREQ=WEEKLY;BYDAY=SU\u{a2}E,SA\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    inputs.push(("minimal non-ASCII BYDAY".into(), minimal.as_bytes().to_vec()));
    for (name, raw) in &inputs {
        let e = explain(&config, raw, &rcpt, common::now());
        serde_json::to_string(&e).unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    let e = explain(&config, minimal.as_bytes(), &rcpt, common::now());
    assert_eq!(e.events.len(), 1);
    assert_eq!(e.events[0].rrule, None);
    assert!(e.events[0].problems.iter().any(|p| p.contains("RRULE")), "{:?}", e.events[0].problems);
}
