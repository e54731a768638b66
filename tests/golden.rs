//! Golden files: `tests/fixtures/NAME.eml` → `tests/fixtures/NAME.json`, the exact
//! `explain --json` object at the fixed clock. `UPDATE_GOLDEN=1 cargo test --test golden`
//! rewrites them; review the diff before committing.

mod common;

use invited::pipeline::explain;

#[test]
fn explain_matches_golden_files() {
    let config = common::config();
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut names: Vec<_> = std::fs::read_dir(common::fixtures())
        .expect("fixtures folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "fixtures missing");
    let mut mismatches = Vec::new();
    for eml in names {
        let raw = std::fs::read(&eml).expect("fixture");
        let got = serde_json::to_string_pretty(&explain(&config, &raw, &[], common::now())).expect("json") + "\n";
        let golden = eml.with_extension("json");
        if update {
            std::fs::write(&golden, &got).expect("write golden");
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == got => {}
            Ok(want) => mismatches.push(format!("{}:\n--- want\n{want}\n+++ got\n{got}", golden.display())),
            Err(_) => mismatches.push(format!("{} is missing (UPDATE_GOLDEN=1 writes it)", golden.display())),
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
