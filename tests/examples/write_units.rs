//! Capacity units per task on DynamoDB, measured from `ReturnConsumedCapacity = INDEXES` on
//! every call of a task's life (create → claim → success → cleanup), against DynamoDB Local.
//!
//! `cargo run --release -p tasker-tests --example write_units -- [TASKS]` (default 1000).
//! Starts a DynamoDB Local of its own from ~/.cache/tasker (`scripts/setup-test-tools.sh`).

use std::collections::BTreeMap;

use futures::StreamExt;
use tasker::store::{ListFilter, ListPage};
use tasker::{NewTask, ProcessorSettings, Registry, Task, Tasker, Timestamp};
use tasker_tests::capacity::{CapacityProxy, Consumed, WRITE_OPERATIONS};
use tasker_tests::dynamo::{self, OwnDynamoLocal};

fn report(phase: &str, tasks: usize, ledger: &BTreeMap<String, Consumed>) -> f64 {
    let mut write_units = 0.0;
    for (operation, consumed) in ledger {
        let per_task = consumed.units() / tasks as f64;
        if WRITE_OPERATIONS.contains(&operation.as_str()) {
            write_units += consumed.units();
        }
        println!(
            "| {phase} | {operation} | {} | {:.1} | {:.1} | {per_task:.2} | {} |",
            consumed.calls, consumed.table_units, consumed.index_units, consumed.condition_failures
        );
    }
    write_units / tasks as f64
}

#[tokio::main]
async fn main() {
    let tasks: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let local = OwnDynamoLocal::start().await;
    let proxy = CapacityProxy::start(&local.endpoint()).await;
    let store = dynamo::fresh_store_at(&proxy.endpoint).await;
    proxy.take();

    println!(
        "Capacity units for {tasks} tasks of about 100 bytes each (no reference, no idempotency key)\n"
    );
    println!(
        "| phase | operation | calls | table units | index units | units per task | condition failures |"
    );
    println!("|---|---|---|---|---|---|---|");

    let now = Timestamp::now_utc();
    futures::stream::iter(0..tasks)
        .for_each_concurrent(16, |i| {
            let store = store.clone();
            async move {
                let task = Task::from_new(NewTask::new("noop", format!("{{\"n\":{i}}}")), now);
                store.task_create(task).await.expect("create");
            }
        })
        .await;
    let mut total = report("enqueue", tasks, &proxy.take());

    let mut registry = Registry::new();
    registry
        .register("noop", |_| async { Ok(()) })
        .expect("register");
    let tasker = Tasker::new(store.clone(), registry, ProcessorSettings::default());
    let mut processed = 0;
    while processed < tasks {
        let summary = tasker.process_queue(None).await.expect("run");
        if summary.claimed == 0 {
            break;
        }
        processed += summary.outcomes.succeeded;
    }
    total += report("process", tasks, &proxy.take());

    // What operators' reads cost at this size: the counts behind GET /stats, and one page.
    let counts = store
        .task_count_by_status(Timestamp::now_utc())
        .await
        .expect("counts");
    let stats_units: f64 = proxy.take().values().map(Consumed::units).sum();
    let page = store
        .task_list(ListPage {
            filter: &ListFilter::default(),
            after: None,
            limit: 100,
            now: Timestamp::now_utc(),
        })
        .await
        .expect("list");
    let list_units: f64 = proxy.take().values().map(Consumed::units).sum();
    let reads = format!(
        "counts of {} tasks: {stats_units:.1} read units; one listing page of {}: {list_units:.1} read units",
        counts.total(),
        page.tasks.len()
    );

    let deleted = store
        .task_purge_finished(Timestamp::now_utc(), &|_| ())
        .await
        .expect("cleanup");
    total += report("cleanup", tasks, &proxy.take());

    println!(
        "\n{processed} tasks succeeded, {deleted} deleted: {total:.2} write units per task over its life"
    );
    println!("{reads}");
}
