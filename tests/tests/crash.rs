//! A `tasker serve` killed with SIGKILL in the middle of a batch of slow tasks: after the lease
//! expires a new process completes every task, and only the tasks in flight at the kill ran twice.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use tasker::store::TaskReader;
use tasker::{DynamoStore, SqliteStore, Store, TaskId, TaskStatus};
use tasker_tests::dynamo;
use tasker_tests::eventually;
use tasker_tests::process::Serve;
use tasker_tests::receiver::Receiver;

const TASKS: usize = 12;

async fn crash_and_recover(
    store_args: &[&str],
    mut envs: Vec<(&'static str, String)>,
    store: Store,
) {
    let receiver = Receiver::start().await;
    envs.extend([
        ("TASKER_WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
        ("TASKER_CONCURRENCY", "4".to_owned()),
        // Batches of 4: at the kill some tasks are done, some in flight, some not yet claimed.
        ("TASKER_BATCH_SIZE", "4".to_owned()),
        // Keep finished tasks: the restarted process runs cleanup when it starts.
        ("TASKER_RETENTION", "1h".to_owned()),
        // A short run and lease grace, so the lease of the killed run expires within seconds;
        // the run still fits all 12 tasks (3 waves of 1.5 s).
        ("TASKER_MAX_RUN", "8s".to_owned()),
        ("TASKER_TIME_MARGIN", "2s".to_owned()),
        ("TASKER_LEASE_GRACE", "1s".to_owned()),
        ("TASKER_RETRY_INITIAL", "1s".to_owned()),
    ]);
    let mut args = store_args.to_vec();
    args.extend(["--interval", "1"]);
    let serve = Serve::start(&args, &envs).await;
    let client = reqwest::Client::new();

    // GIVEN 12 webhooks that each take 1.5 s to answer
    let mut ids = Vec::new();
    for i in 0..TASKS {
        let body = json!({
            "type": "sendWebhook",
            "payload": {"url": format!("{}/delay/1500/task-{i}", receiver.base), "body": {"i": i}},
        });
        let created: Value = client
            .post(format!("{}/tasks", serve.base))
            .json(&body)
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("JSON");
        let id: TaskId = created["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("task id");
        ids.push(id);
    }

    // WHEN the process is killed while the second batch is being delivered
    eventually(
        "the second batch to start",
        Duration::from_secs(30),
        || async { (receiver.all().len() >= 5).then_some(()) },
    )
    .await;
    drop(serve); // SIGKILL
    let mut in_flight = HashSet::new();
    let mut done_before = HashSet::new();
    for id in &ids {
        let task = store.get(*id).await.expect("get").expect("task not lost");
        match task.status {
            TaskStatus::Running => {
                in_flight.insert(*id);
            }
            TaskStatus::Succeeded => {
                done_before.insert(*id);
            }
            _ => {}
        }
    }
    assert!(
        !done_before.is_empty(),
        "the first batch should have finished before the kill"
    );
    assert!(
        in_flight.len() < TASKS,
        "not every task should be claimed at the kill"
    );
    let delivered_before_restart = receiver.all().len();

    // THEN a new process, once the lease has expired, completes every task
    let restarted = Serve::start(&args, &envs).await;
    for id in &ids {
        eventually(
            &format!("task {id} to succeed"),
            Duration::from_secs(60),
            || async {
                let task = store.get(*id).await.ok().flatten()?;
                (task.status == TaskStatus::Succeeded).then_some(())
            },
        )
        .await;
    }
    drop(restarted);

    // AND only tasks that were in flight at the kill were delivered twice
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
        .filter(|i| deliveries[&format!("/delay/1500/task-{i}")] > 1)
        .collect();
    for i in &twice {
        let path = format!("/delay/1500/task-{i}");
        assert_eq!(deliveries[&path], 2, "{path} ran more than twice");
        assert!(
            in_flight.contains(&ids[*i]),
            "{path} ran twice but was not in flight at the kill"
        );
    }
    assert!(
        !twice.is_empty(),
        "the kill should have interrupted deliveries"
    );
    assert!(
        twice.len() <= delivered_before_restart,
        "more tasks ran twice than had started before the kill"
    );
    for (i, id) in ids.iter().enumerate() {
        if done_before.contains(id) {
            let path = format!("/delay/1500/task-{i}");
            assert_eq!(deliveries[&path], 1, "{path} had finished but ran again");
        }
    }
    eprintln!(
        "crash: {TASKS} tasks, {} done and {} running at the kill \
         ({delivered_before_restart} deliveries started), {} delivered twice, 0 lost",
        done_before.len(),
        in_flight.len(),
        twice.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crash.db");
    let store = Store::Sqlite(SqliteStore::open(&db).expect("open"));
    let db = db.to_str().expect("utf-8 path").to_owned();
    crash_and_recover(&["--db", &db], Vec::new(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_on_dynamodb() {
    let client = dynamo::client();
    let table = dynamo::fresh_table(&client).await;
    let store = Store::DynamoDb(DynamoStore::new(client, &table, Duration::ZERO));
    crash_and_recover(
        &["--store", "dynamodb", "--table", &table],
        dynamo::child_env(),
        store,
    )
    .await;
}
