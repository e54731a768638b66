//! The SMTP intake's group commit: sessions' messages committed in batches by one writer.

mod common;

use std::sync::Arc;
use std::time::Duration;

use invited::intake::smtp::{SpoolError, Spooler};
use invited::store::{self, NewMessage, Source, Store};

fn message(n: usize) -> NewMessage {
    let raw = format!("Subject: message {n}\r\nMessage-ID: <{n}@test>\r\n\r\nbody {n}\r\n").into_bytes();
    NewMessage {
        sha256: format!("{n:064x}"),
        raw,
        source: Source::Smtp,
        envelope_from: Some("alice@acme.com".into()),
        envelope_rcpts: vec!["acme@assistant.example.com".into()],
        message_id: Some(format!("{n}@test")),
        received_at: common::now(),
    }
}

#[tokio::test]
async fn spool_messages_is_one_batch_with_dedup_inside_it() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let first = store.spool_message(&message(1)).await.expect("spools");
        assert!(first.inserted);
        let batch = [message(2), message(1), message(3), message(2)];
        let spooled = store.spool_messages(&batch).await.expect("spools");
        assert_eq!(spooled.len(), 4);
        assert!(spooled[0].inserted && spooled[2].inserted);
        assert_eq!((spooled[1].id, spooled[1].inserted), (first.id, false));
        assert_eq!((spooled[3].id, spooled[3].inserted), (spooled[0].id, false));
        assert_eq!(store.unfinished_messages(false).await.expect("list").len(), 3);
        assert!(store.spool_messages(&[]).await.expect("empty batch").is_empty());
        drop(store);
        backend.finish().await;
    }
}

#[tokio::test]
async fn concurrent_spools_all_get_their_ids_and_are_all_stored() {
    const N: usize = 300;
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let spooler = Arc::new(Spooler::start(store.clone()));
        let tasks: Vec<_> = (0..N)
            .map(|n| {
                let spooler = spooler.clone();
                tokio::spawn(async move { (n, spooler.spool(message(n)).await) })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            let (n, spooled) = task.await.expect("no panic");
            let spooled = spooled.expect("spooled");
            assert!(spooled.inserted);
            let stored = store.load_message(spooled.id).await.expect("load").expect("stored");
            assert_eq!(stored.raw, message(n).raw, "message {n} got the id of another");
            ids.push(spooled.id);
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), N);
        assert_eq!(store.unfinished_messages(false).await.expect("list").len(), N);
        // The same bytes again: the existing id.
        let again = spooler.spool(message(7)).await.expect("spooled");
        assert!(!again.inserted);
        spooler.stop().await;
        assert!(matches!(spooler.spool(message(N)).await, Err(SpoolError::Stopped)));
        drop(store);
        backend.finish().await;
    }
}

/// A SQLite store whose inserts of `poison@test` fail, and a second connection to its file.
async fn poisoned_sqlite(dir: &tempfile::TempDir) -> (Arc<dyn Store>, sqlx::SqlitePool) {
    let url = format!("sqlite://{}/invited.db", dir.path().display());
    let store = store::open(&url).await.expect("store");
    let pool = sqlx::SqlitePool::connect(&url).await.expect("pool");
    sqlx::query(
        "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.message_id = 'poison@test'
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
    )
    .execute(&pool)
    .await
    .expect("trigger");
    (store, pool)
}

#[tokio::test]
async fn a_failed_commit_answers_every_message_of_its_batch_with_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, pool) = poisoned_sqlite(&dir).await;
    let spooler = Arc::new(Spooler::start(store.clone()));
    // Hold the write lock so that the first commit waits and the others queue behind it.
    let mut lock = pool.acquire().await.expect("connection");
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *lock).await.expect("lock");
    let first = {
        let spooler = spooler.clone();
        tokio::spawn(async move { spooler.spool(message(0)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rest: Vec<_> = (1..=10)
        .map(|n| {
            let spooler = spooler.clone();
            let mut m = message(n);
            if n == 5 {
                m.message_id = Some("poison@test".into());
            }
            tokio::spawn(async move { spooler.spool(m).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    sqlx::query("ROLLBACK").execute(&mut *lock).await.expect("unlock");
    drop(lock);
    assert!(first.await.expect("no panic").expect("the first batch commits").inserted);
    for task in rest {
        let err = task.await.expect("no panic").expect_err("the poisoned batch fails as a whole");
        assert!(matches!(err, SpoolError::Store(_)), "{err:?}");
    }
    assert_eq!(store.unfinished_messages(false).await.expect("list").len(), 1, "nothing of the batch is stored");
    // The writer carries on.
    assert!(spooler.spool(message(11)).await.expect("spooled").inserted);
    spooler.stop().await;
}

#[tokio::test]
async fn a_session_that_goes_away_does_not_break_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, pool) = poisoned_sqlite(&dir).await;
    let spooler = Arc::new(Spooler::start(store.clone()));
    let mut lock = pool.acquire().await.expect("connection");
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *lock).await.expect("lock");
    let gone: Vec<_> = (0..5)
        .map(|n| {
            let spooler = spooler.clone();
            tokio::spawn(async move { spooler.spool(message(n)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for task in &gone {
        task.abort();
    }
    sqlx::query("ROLLBACK").execute(&mut *lock).await.expect("unlock");
    drop(lock);
    let spooled = spooler.spool(message(5)).await.expect("spooled");
    assert!(spooled.inserted);
    // Whatever reached the writer before its session went away is committed all the same.
    assert!(!store.unfinished_messages(false).await.expect("list").is_empty());
    spooler.stop().await;
}

#[tokio::test]
async fn stop_commits_what_is_queued_and_the_writer_ends_when_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, pool) = poisoned_sqlite(&dir).await;
    let spooler = Arc::new(Spooler::start(store.clone()));
    let mut lock = pool.acquire().await.expect("connection");
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *lock).await.expect("lock");
    let queued: Vec<_> = (0..5)
        .map(|n| {
            let spooler = spooler.clone();
            tokio::spawn(async move { spooler.spool(message(n)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = {
        let spooler = spooler.clone();
        tokio::spawn(async move { spooler.stop().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    sqlx::query("ROLLBACK").execute(&mut *lock).await.expect("unlock");
    drop(lock);
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("stops").expect("no panic");
    for task in queued {
        assert!(task.await.expect("no panic").expect("queued before stop: committed").inserted);
    }
    assert_eq!(store.unfinished_messages(false).await.expect("list").len(), 5);

    // A spooler dropped without stop: its writer ends on its own.
    let dropped = Spooler::start(store.clone());
    assert!(dropped.spool(message(6)).await.expect("spooled").inserted);
    drop(dropped);
}
