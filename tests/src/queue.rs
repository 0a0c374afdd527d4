//! Driving a DynamoDB store's queue by hand, at instants the test picks, and reading what it
//! cost through the capacity proxy.

use std::collections::BTreeMap;
use std::time::Duration;
use tasker::store::Claim;

use tasker::store::dynamodb::due::{MARGIN, WATERMARK_MAX_LAG};
use tasker::store::{Leases, Settlement};
use tasker::{DynamoStore, NewTask, Task, Timestamp};

use crate::capacity::{Consumed, WRITE_OPERATIONS};
use crate::dynamo;
use crate::fixtures::at;

/// Creates a `noop` task at `now`.
pub async fn create(store: &DynamoStore, now: Timestamp) -> Task {
    store
        .task_create(Task::from_new(NewTask::new("noop", "{}"), now))
        .await
        .expect("create")
        .into_task()
}

/// Claims everything due at `now` and records each as a success a second later.
pub async fn run_all(store: &DynamoStore, now: Timestamp) -> Vec<Task> {
    let claimed = store
        .task_claim(Claim::due(
            now,
            1000,
            &Leases::fixed(Duration::from_secs(60)),
        ))
        .await
        .expect("claim");
    for task in &claimed {
        let done = now.plus(Duration::from_secs(1));
        store
            .task_settle(task, Settlement::Succeeded, done)
            .await
            .expect("settle");
    }
    claimed
}

/// GIVEN 120 tasks created over 12 s from [`at`]`(0)` that succeeded at `at(20)` WHEN a scan
/// runs past the watermark's margin and longest wait THEN every shard's watermark stands at its
/// newest finished entry. The tasks, and the instant of that scan.
pub async fn finished_below_watermarks(store: &DynamoStore) -> (Vec<Task>, Timestamp) {
    let mut done = Vec::new();
    for i in 0..120 {
        done.push(create(store, at(i / 10)).await);
    }
    assert_eq!(run_all(store, at(20)).await.len(), 120);
    let marks = store.watermarks().await.expect("read the watermarks");
    assert!(
        marks.iter().all(Option::is_none),
        "nothing is old enough yet"
    );
    let later = at(20).plus(WATERMARK_MAX_LAG + MARGIN);
    assert!(run_all(store, later).await.is_empty());
    (done, later)
}

/// Write units on the table and the indexes, and failed conditions, in `ledger`.
pub fn write_units(ledger: &BTreeMap<String, Consumed>) -> (f64, f64, u64) {
    let writes = ledger
        .iter()
        .filter(|(operation, _)| WRITE_OPERATIONS.contains(&operation.as_str()));
    writes.fold((0.0, 0.0, 0), |(table, index, failures), (_, c)| {
        (
            table + c.table_units,
            index + c.index_units,
            failures + c.condition_failures,
        )
    })
}

/// Read units of `operation` in `ledger`.
pub fn read_units(ledger: &BTreeMap<String, Consumed>, operation: &str) -> f64 {
    ledger.get(operation).map_or(0.0, Consumed::units)
}

/// The same table as `store`, as a process that knows nothing of it yet would see it.
pub fn another_process(store: &DynamoStore, endpoint: &str) -> DynamoStore {
    DynamoStore::new(
        dynamo::client_for(endpoint),
        store.table(),
        dynamo::RETENTION,
    )
}
