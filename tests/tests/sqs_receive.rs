//! SQS mode's receive loop (`tasker worker`) against moto's server: a message is received as
//! soon as a slot frees, so a slow task holds back no message behind it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tasker::runtime::receive::receive;
use tasker::store::Created;
use tasker::{NewTask, ProcessorSettings, Registry, SqliteStore, TaskId, TaskStatus, Tasker};
use tasker_tests::eventually;
use tasker_tests::sqs::{Queues, fresh_queues};

const SLOW: &str = "slow";
const QUICK: &str = "quick";
const QUICK_TASKS: usize = 12;

/// A slow task waits for `release`; quick ones count themselves in `quick`.
fn registry(release: &Arc<tokio::sync::Notify>, quick: &Arc<Mutex<usize>>) -> Registry {
    let mut registry = Registry::new();
    let release = Arc::clone(release);
    // Its timeout outlasts the test's waits: only the release ends it.
    let slow = tasker::handlers::TypeSettings {
        timeout: Duration::from_secs(300),
        ..tasker::handlers::TypeSettings::default()
    };
    registry
        .register_with(SLOW, slow, move |_| {
            let release = Arc::clone(&release);
            async move {
                release.notified().await;
                Ok(())
            }
        })
        .expect("register slow");
    let quick = Arc::clone(quick);
    registry
        .register(QUICK, move |_| {
            let quick = Arc::clone(&quick);
            async move {
                *quick.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                Ok(())
            }
        })
        .expect("register quick");
    registry
}

async fn create(tasker: &Tasker<SqliteStore>, task_type: &str) -> tasker::Task {
    match tasker
        .create_held(NewTask::new(task_type, "{}"))
        .await
        .expect("create")
    {
        Created::New(task) => task,
        Created::Existing(task) => panic!("unexpected existing task {}", task.id),
    }
}

/// Waits until the task `id` has `status`.
async fn becomes(store: &SqliteStore, id: TaskId, status: TaskStatus) {
    eventually(
        &format!("the task to be {status}"),
        Duration::from_secs(30),
        || {
            let store = store.clone();
            async move {
                let task = store.task_get(id).await.ok()??;
                (task.status == status).then_some(())
            }
        },
    )
    .await;
}

/// GIVEN a worker running 2 tasks at once, one of them a task that runs until released WHEN
/// 12 quick tasks are queued behind it THEN all 12 run while the slow one still runs (a
/// worker that received the next messages only once its whole batch was done would run none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_task_holds_back_no_message_behind_it() {
    let Queues { queue, .. } = fresh_queues(5, Duration::from_secs(60)).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("tasks.db")).expect("open SQLite file");
    let (release, quick) = (Arc::default(), Arc::default());
    let settings = ProcessorSettings {
        concurrency: 2,
        ..ProcessorSettings::default()
    };
    let tasker = Tasker::new(store.clone(), registry(&release, &quick), settings)
        .with_push(Arc::new(queue.clone()));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let worker = {
        let (tasker, queue) = (tasker.clone(), queue.clone());
        tokio::spawn(async move {
            receive(&tasker, &queue, Duration::from_secs(1), async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
        })
    };

    let slow = create(&tasker, SLOW).await;
    assert!(tasker.deliver(std::slice::from_ref(&slow)).await);
    becomes(&store, slow.id, TaskStatus::Running).await;
    let mut quick_tasks = Vec::new();
    for _ in 0..QUICK_TASKS {
        quick_tasks.push(create(&tasker, QUICK).await);
    }
    assert!(tasker.deliver(&quick_tasks).await);
    eventually(
        "every quick task to run beside the slow one",
        Duration::from_secs(60),
        || {
            let quick = Arc::clone(&quick);
            async move {
                (*quick.lock().unwrap_or_else(|p| p.into_inner()) == QUICK_TASKS).then_some(())
            }
        },
    )
    .await;
    let running = store
        .task_get(slow.id)
        .await
        .expect("read")
        .expect("slow task");
    assert_eq!(running.status, TaskStatus::Running, "{running:?}");

    release.notify_one();
    becomes(&store, slow.id, TaskStatus::Succeeded).await;
    let _ = stop.send(true);
    let summary = worker.await.expect("worker");
    assert_eq!(summary.outcomes.succeeded, QUICK_TASKS + 1, "{summary:?}");
}
