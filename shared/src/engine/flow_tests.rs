//! Flow control in the engine: a paused type's tasks wait, and a capped type never takes more
//! than its slots while other types run. Barrier-driven like the dispatch tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::*;
use crate::store::SqliteStore;
use crate::task::{NewTask, TaskId, TaskStatus};

const HANG: Duration = Duration::from_secs(30);

fn plain(registry: Registry) -> Tasker<SqliteStore> {
    let settings = ProcessorSettings {
        concurrency: 8,
        ..ProcessorSettings::default()
    };
    Tasker::new(
        SqliteStore::in_memory().expect("sqlite"),
        registry,
        settings,
    )
}

async fn create(tasker: &Tasker<SqliteStore>, task_type: &str) -> TaskId {
    tasker
        .create(NewTask::new(task_type, "{}"))
        .await
        .expect("create")
        .into_task()
        .id
}

#[tokio::test]
async fn a_paused_type_waits_and_runs_once_resumed() {
    let mut registry = Registry::new();
    registry
        .register("mail", |_| async { Ok(()) })
        .expect("register");
    let tasker = plain(registry);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(create(&tasker, "mail").await);
    }
    let paused = tasker.pause_type("mail", true).await.expect("pause");
    assert!(paused.contains_key("mail"));
    assert!(matches!(
        tasker.pause_type("nope", true).await,
        Err(TaskerError::UnknownType(_))
    ));

    let summary = tasker.process_queue(None).await.expect("run");
    assert_eq!(summary.claimed, 0, "{summary:?}");
    for id in &ids {
        assert_eq!(
            tasker.get(*id).await.expect("get").status,
            TaskStatus::Pending
        );
    }
    let view = tasker.types().await.expect("types");
    assert_eq!(view.types[0].name, "mail");
    assert!(view.types[0].paused);
    assert_eq!(view.types[0].counts.due, 3);

    tasker.pause_type("mail", false).await.expect("resume");
    let summary = tasker.process_queue(None).await.expect("run");
    assert_eq!(
        (summary.claimed, summary.outcomes.succeeded),
        (3, 3),
        "{summary:?}"
    );
}

// One scenario from its GIVEN to its THEN, its handlers held by channels the test releases
// step by step: longer than most functions, and clearer whole.
#[tokio::test]
async fn a_capped_type_takes_no_more_than_its_slots_while_other_types_run() {
    let (started_tx, mut started) = mpsc::unbounded_channel::<TaskId>();
    let (done_tx, mut done) = mpsc::unbounded_channel::<TaskId>();
    let (release, released) = watch::channel(false);
    let at_once = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    let capped = TypeSettings {
        concurrency: Some(2),
        ..TypeSettings::default()
    };
    registry
        .register_with("slow", capped, {
            let (at_once, most) = (Arc::clone(&at_once), Arc::clone(&most));
            move |ctx| {
                let started = started_tx.clone();
                let mut released = released.clone();
                let (at_once, most) = (Arc::clone(&at_once), Arc::clone(&most));
                async move {
                    let now = at_once.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let _ = started.send(ctx.id);
                    let _ = released.wait_for(|go| *go).await;
                    at_once.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        })
        .expect("register slow");
    registry
        .register("fast", move |ctx| {
            let done = done_tx.clone();
            async move {
                let _ = done.send(ctx.id);
                Ok(())
            }
        })
        .expect("register fast");
    let tasker = plain(registry);
    for _ in 0..5 {
        create(&tasker, "slow").await;
    }
    for _ in 0..10 {
        create(&tasker, "fast").await;
    }
    let run = tokio::spawn({
        let tasker = tasker.clone();
        async move { tasker.process_queue(None).await }
    });
    for _ in 0..2 {
        tokio::time::timeout(HANG, started.recv())
            .await
            .expect("a slow task starts");
    }
    // Every fast task runs through the six other slots while two slow ones hold theirs; the
    // claims that took them left three slow tasks due.
    for _ in 0..10 {
        tokio::time::timeout(HANG, done.recv())
            .await
            .expect("a fast task runs");
    }
    assert!(started.try_recv().is_err(), "a third slow task started");
    release.send_replace(true);
    let summary = tokio::time::timeout(HANG, run)
        .await
        .expect("the run ends")
        .expect("run task")
        .expect("run");
    assert_eq!(
        (summary.claimed, summary.outcomes.succeeded),
        (15, 15),
        "{summary:?}"
    );
    assert_eq!(most.load(Ordering::SeqCst), 2);
}

#[test]
fn a_cap_of_zero_is_refused_at_registration() {
    let mut registry = Registry::new();
    let settings = TypeSettings {
        concurrency: Some(0),
        ..TypeSettings::default()
    };
    assert!(
        registry
            .register_with("t", settings, |_| async { Ok(()) })
            .is_err()
    );
}
