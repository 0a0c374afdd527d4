//! A `tasker serve` killed with SIGKILL in the middle of a batch of slow tasks: after the lease
//! expires a new process completes every task, and only the tasks in flight at the kill ran twice.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tasker::{AnyStore, DynamoStore, SqliteStore, Store, Task, TaskId, TaskStatus};
use tasker_tests::fixtures::ApiClient;
use tasker_tests::process::Serve;
use tasker_tests::receiver::Receiver;
use tasker_tests::{dynamo, eventually};

const TASKS: usize = 12;

/// The server's settings: 4 slots so that at the kill some tasks are done, some in flight and
/// some not yet claimed; finished tasks kept (the restarted process runs cleanup when it
/// starts); a handler timeout and lease grace that let a claim of the killed process expire
/// 10 s + 1 s after it was made. The timeout leaves the 1.5 s webhooks a wide margin: with 3 s,
/// a delivery slowed past it on a loaded 2-core CI machine timed out and was retried, a second
/// delivery the kill did not cause.
fn settings() -> Vec<(&'static str, String)> {
    [
        ("TASKER_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("TASKER_CONCURRENCY", "4"),
        ("TASKER_BATCH_SIZE", "4"),
        ("TASKER_RETENTION", "1h"),
        ("TASKER_HANDLER_TIMEOUT", "10s"),
        ("TASKER_LEASE_GRACE", "1s"),
        ("TASKER_RETRY_INITIAL", "1s"),
    ]
    .map(|(name, value)| (name, value.to_owned()))
    .to_vec()
}

/// The path the webhook of task `i` posts to: the receiver answers it after 1.5 s.
fn slow_path(i: usize) -> String {
    format!("/delay/1500/task-{i}")
}

/// Where the tasks were when the process was killed.
struct AtTheKill {
    in_flight: HashSet<TaskId>,
    done: HashSet<TaskId>,
    /// Deliveries the receiver had seen start.
    deliveries: usize,
    /// Each task as stored at the kill, for the failure messages.
    stored: HashMap<TaskId, Task>,
}

/// GIVEN 12 webhooks that each take 1.5 s to answer, created through `serve`.
async fn slow_webhooks(serve: &Serve, receiver: &Receiver) -> Vec<TaskId> {
    let api = ApiClient::open(&serve.base);
    let mut ids = Vec::new();
    for i in 0..TASKS {
        let body = json!({
            "type": "sendWebhook",
            "payload": {"url": format!("{}{}", receiver.base, slow_path(i)), "body": {"i": i}},
        });
        let (_, created) = api.send(Method::POST, "/tasks", Some(&body)).await;
        ids.push(
            created["id"]
                .as_str()
                .expect("id")
                .parse()
                .expect("task id"),
        );
    }
    ids
}

/// WHEN the process is killed (SIGKILL) while the second batch is being delivered.
async fn kill_mid_batch(
    serve: Serve,
    receiver: &Receiver,
    store: &AnyStore,
    ids: &[TaskId],
) -> AtTheKill {
    eventually(
        "the second batch to start",
        Duration::from_secs(30),
        || async { (receiver.all().len() >= 5).then_some(()) },
    )
    .await;
    drop(serve);
    let mut kill = AtTheKill {
        in_flight: HashSet::new(),
        done: HashSet::new(),
        deliveries: receiver.all().len(),
        stored: HashMap::new(),
    };
    for id in ids {
        let task = store
            .task_get(*id)
            .await
            .expect("get")
            .expect("task not lost");
        match task.status {
            TaskStatus::Running => kill.in_flight.insert(*id),
            TaskStatus::Succeeded => kill.done.insert(*id),
            _ => false,
        };
        kill.stored.insert(*id, task);
    }
    assert!(
        !kill.done.is_empty(),
        "the first batch should have finished before the kill"
    );
    assert!(
        kill.in_flight.len() < TASKS,
        "not every task should be claimed at the kill"
    );
    kill
}

/// THEN a new process, once the lease has expired, completes every task.
async fn a_restart_completes_every_task(
    args: &[&str],
    envs: &[(&str, String)],
    store: &AnyStore,
    ids: &[TaskId],
) {
    let _restarted = Serve::start(args, envs).await;
    for id in ids {
        eventually(
            &format!("task {id} to succeed"),
            Duration::from_secs(60),
            || async {
                let task = store.task_get(*id).await.ok().flatten()?;
                (task.status == TaskStatus::Succeeded).then_some(())
            },
        )
        .await;
    }
}

/// AND only tasks that were in flight at the kill were delivered twice.
fn only_tasks_in_flight_ran_twice(receiver: &Receiver, ids: &[TaskId], kill: &AtTheKill) {
    let mut deliveries: HashMap<String, usize> = HashMap::new();
    for request in receiver.all() {
        *deliveries.entry(request.path).or_default() += 1;
    }
    assert_eq!(
        deliveries.len(),
        TASKS,
        "every task was delivered: {deliveries:?}"
    );
    let twice: Vec<usize> = (0..TASKS)
        .filter(|&i| deliveries[&slow_path(i)] > 1)
        .collect();
    for &i in &twice {
        assert_eq!(
            deliveries[&slow_path(i)],
            2,
            "{} ran more than twice",
            slow_path(i)
        );
        let at_kill = &kill.stored[&ids[i]];
        assert!(
            kill.in_flight.contains(&ids[i]),
            "{} ran twice but was not in flight at the kill: {:?}, attempts {}, last error {:?}",
            slow_path(i),
            at_kill.status,
            at_kill.attempts,
            at_kill.last_error
        );
    }
    assert!(
        !twice.is_empty(),
        "the kill should have interrupted deliveries"
    );
    assert!(
        twice.len() <= kill.deliveries,
        "more tasks ran twice than had started before the kill"
    );
    for (i, id) in ids.iter().enumerate() {
        if kill.done.contains(id) {
            assert_eq!(
                deliveries[&slow_path(i)],
                1,
                "{} had finished but ran again",
                slow_path(i)
            );
        }
    }
    eprintln!(
        "crash: {TASKS} tasks, {} done and {} running at the kill \
         ({} deliveries started), {} delivered twice, 0 lost",
        kill.done.len(),
        kill.in_flight.len(),
        kill.deliveries,
        twice.len()
    );
}

async fn crash_and_recover(
    store_args: &[&str],
    mut envs: Vec<(&'static str, String)>,
    store: AnyStore,
) {
    let receiver = Receiver::start().await;
    envs.extend(settings());
    let mut args = store_args.to_vec();
    args.extend(["--interval", "1"]);
    let serve = Serve::start(&args, &envs).await;
    let ids = slow_webhooks(&serve, &receiver).await;
    let kill = kill_mid_batch(serve, &receiver, &store, &ids).await;
    a_restart_completes_every_task(&args, &envs, &store, &ids).await;
    only_tasks_in_flight_ran_twice(&receiver, &ids, &kill);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crash.db");
    let store = AnyStore::Sqlite(SqliteStore::open(&db).expect("open"));
    let db = db.to_str().expect("utf-8 path").to_owned();
    crash_and_recover(&["--db", &db], Vec::new(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_on_dynamodb() {
    let client = dynamo::client();
    let table = dynamo::fresh_table(&client).await;
    let store = AnyStore::DynamoDb(DynamoStore::new(client, &table, dynamo::RETENTION));
    crash_and_recover(
        &["--store", "dynamodb", "--table", &table],
        dynamo::child_env(),
        store,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_on_postgres() {
    let url = tasker_tests::postgres::fresh_database().await;
    let store = AnyStore::Postgres(
        tasker::store::postgres::PgStore::connect(&url, 2)
            .await
            .expect("connect to PostgreSQL"),
    );
    crash_and_recover(
        &["--store", "postgres", "--database-url", &url],
        Vec::new(),
        store,
    )
    .await;
}
