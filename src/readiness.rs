//! What `/readyz` reports: the store answers, and every configured intake is running.
//!
//! Each intake registers under its own name (`smtp`, and `imap:<mailbox key>` per IMAP
//! mailbox) and holds a [`Running`] guard while its task runs. An IMAP mailbox is running
//! while its watcher is connected after SELECT, or while another daemon holds its lease. The guard marks the intake stopped when it is
//! dropped, so a task that returns or panics turns the daemon not-ready on its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The intakes the daemon runs and whether each is up. Cloning shares the registry.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    /// Intake name → the problem, or `None` when it is running.
    intakes: Arc<Mutex<BTreeMap<String, Option<String>>>>,
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Registers an intake that is configured but not running yet (`problem` says why).
    pub fn expect(&self, name: &str, problem: &str) {
        self.set(name, Some(problem.to_owned()));
    }

    /// Marks `name` running until the returned guard is dropped.
    pub fn running(&self, name: &str) -> Running {
        self.set(name, None);
        Running { readiness: self.clone(), name: name.to_owned() }
    }

    /// Every registered intake, with its problem if it is not running.
    pub fn intakes(&self) -> BTreeMap<String, Option<String>> {
        self.lock().clone()
    }

    fn set(&self, name: &str, problem: Option<String>) {
        self.lock().insert(name.to_owned(), problem);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<String>>> {
        // The map stays consistent whatever panicked while holding it: one insert at a time.
        self.intakes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Held by a running intake's task; dropping it (return or panic) marks the intake stopped.
#[derive(Debug)]
pub struct Running {
    readiness: Readiness,
    name: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.readiness.set(&self.name, Some("stopped".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intake_is_ready_only_while_its_guard_lives() {
        let readiness = Readiness::new();
        readiness.expect("smtp", "starting");
        assert_eq!(readiness.intakes()["smtp"].as_deref(), Some("starting"));
        let guard = readiness.running("smtp");
        assert_eq!(readiness.intakes()["smtp"], None);
        drop(guard);
        assert_eq!(readiness.intakes()["smtp"].as_deref(), Some("stopped"));
    }

    #[test]
    fn a_panicking_task_leaves_its_intake_stopped() {
        let readiness = Readiness::new();
        let r = readiness.clone();
        let joined = std::thread::spawn(move || {
            let _guard = r.running("imap:acme");
            panic!("the watcher died");
        })
        .join();
        assert!(joined.is_err());
        assert_eq!(readiness.intakes()["imap:acme"].as_deref(), Some("stopped"));
    }
}
