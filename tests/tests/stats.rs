//! `GET /stats` on DynamoDB (`tasker::store::dynamodb::overview`): a bounded number of read
//! units whatever the table holds, and what each number is made of (counts each process
//! writes, a processor's published look at the queue, lower bounds). DynamoDB Local, through
//! the capacity-counting proxy.

use std::collections::BTreeMap;
use std::time::Duration;
use tasker::store::{Claim, ListPage};

use futures::{StreamExt, TryStreamExt};
use tasker::store::{Leases, LowerBound, Settlement};
use tasker::task::TaskStatus;
use tasker::{DynamoStore, NewTask, Task, Timestamp};
use tasker_tests::capacity::{CapacityProxy, Consumed, READ_OPERATIONS, measured_reads};
use tasker_tests::dynamo;
use tasker_tests::fixtures::{at, t0};
use tasker_tests::queue::another_process;

/// Read units of every read in `ledger`: at least one read, each reporting its capacity.
fn read_units(ledger: &BTreeMap<String, Consumed>) -> f64 {
    measured_reads(ledger, READ_OPERATIONS)
}

/// `n` tasks created at `t0` (scheduled at `scheduled`, if given), 16 at a time.
async fn create(store: &DynamoStore, n: usize, scheduled: Option<Timestamp>) -> Vec<Task> {
    futures::stream::iter(0..n)
        .map(|_| async move {
            let mut new = NewTask::new("noop", "{}");
            new.scheduled_at = scheduled;
            store
                .task_create(Task::from_new(new, t0()))
                .await
                .map(|created| created.into_task())
        })
        .buffer_unordered(16)
        .try_collect()
        .await
        .expect("create")
}

/// Runs every task due at `at(1)`: the first `failing` fail, the others succeed.
async fn run(store: &DynamoStore, mut failing: usize) -> usize {
    let leases = Leases::fixed(Duration::from_secs(60));
    let mut ran = 0;
    loop {
        let claimed = store
            .task_claim(Claim::due(at(1), 100, &leases))
            .await
            .expect("claim");
        if claimed.is_empty() {
            return ran;
        }
        // 16 outcomes at a time, as a processor writes them: one at a time, 2,100 writes
        // took most of this test's minutes in CI.
        let outcomes = claimed.iter().map(|task| {
            let outcome = if failing > 0 {
                failing -= 1;
                Settlement::Failed {
                    error: "no".to_owned(),
                }
            } else {
                Settlement::Succeeded
            };
            store.task_settle(task, outcome, at(1))
        });
        let settled: Vec<_> = futures::stream::iter(outcomes)
            .buffer_unordered(16)
            .try_collect()
            .await
            .expect("settle");
        ran += settled.len();
    }
}

/// GIVEN 2,000 tasks succeeded, 100 failed and 100 cancelled a moment ago (nothing old enough
/// for a watermark), and 600 pending tomorrow WHEN a process that knows nothing of the table
/// asks for the stats THEN it reads at most 50 units, and every count is right: the finished
/// ones from the counts the processor wrote, the unfinished from the look it published. Once
/// that look is stale, pending and running are marked as lower bounds, still within 50 units.
#[tokio::test]
async fn stats_read_at_most_50_units_whatever_the_table_holds() {
    let proxy = CapacityProxy::start(&dynamo::endpoint()).await;
    let processor = dynamo::fresh_store_at(&proxy.endpoint).await;
    let now = create(&processor, 2_200, None).await;
    create(&processor, 600, Some(at(86_400))).await;
    futures::stream::iter(now.iter().take(100))
        .map(|task| processor.task_cancel(task.id, t0()))
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("cancel");
    assert_eq!(run(&processor, 100).await, 2_100);
    // The end of its run writes its counts; while it works it publishes its look.
    processor.queue_flush(at(2), true).await;
    processor.queue_flush(at(2), false).await;

    let api = another_process(&processor, &proxy.endpoint);
    proxy.take();
    let overview = api.queue_overview(at(3)).await.expect("overview");
    let units = read_units(&proxy.take());
    eprintln!("stats with a processor's look: {units} read units");
    assert!(units <= 50.0, "GET /stats read {units} units");
    let counts = overview.counts;
    assert_eq!(
        (counts.succeeded, counts.failed, counts.cancelled),
        (2_000, 100, 100)
    );
    assert_eq!((counts.pending, counts.running), (600, 0));
    assert_eq!(overview.backlog.due, 0);
    assert_eq!(overview.active_seen_at, Some(at(2)), "the processor's look");
    assert!(overview.lower_bounds.is_empty());

    let stale = at(2).plus(Duration::from_secs(180));
    proxy.take();
    let overview = api.queue_overview(stale).await.expect("overview");
    let units = read_units(&proxy.take());
    eprintln!("stats without one: {units} read units");
    assert!(units <= 50.0, "GET /stats read {units} units");
    assert_eq!(overview.active_seen_at, None);
    assert_eq!(
        overview.lower_bounds,
        vec![LowerBound::Pending, LowerBound::Running, LowerBound::Due]
    );
    assert!(overview.counts.pending >= 600, "{:?}", overview.counts);
    assert_eq!(overview.counts.succeeded, 2_000);
}

/// GIVEN a processor that ran three tasks (two succeeded, one failed) WHEN another process
/// counts THEN it sees them once the processor wrote its counts (at the end of a run, or
/// every few seconds); a cancel and a retry through that process count at once.
#[tokio::test]
async fn each_process_writes_its_counts_and_any_reads_them() {
    let processor = dynamo::fresh_store().await;
    let api = another_process(&processor, &dynamo::endpoint());
    let tasks = create(&processor, 4, None).await;
    api.task_cancel(tasks[3].id, t0()).await.expect("cancel");
    assert_eq!(run(&processor, 1).await, 3);

    let counts = api.task_count_by_status(at(2)).await.expect("counts");
    assert_eq!(
        (counts.succeeded, counts.failed, counts.cancelled),
        (0, 0, 1),
        "the processor has not written its counts yet"
    );
    processor.queue_flush(at(2), true).await;
    let counts = api.task_count_by_status(at(2)).await.expect("counts");
    assert_eq!(
        (counts.succeeded, counts.failed, counts.cancelled),
        (2, 1, 1)
    );

    let failed = api
        .task_list(ListPage {
            filter: &tasker::store::ListFilter {
                status: Some(TaskStatus::Failed),
                ..Default::default()
            },
            after: None,
            limit: 10,
            now: at(2),
        })
        .await
        .expect("list")
        .tasks;
    api.task_retry(failed[0].id, at(3)).await.expect("retry");
    let counts = processor.task_count_by_status(at(3)).await.expect("counts");
    assert_eq!(
        (
            counts.succeeded,
            counts.failed,
            counts.cancelled,
            counts.pending
        ),
        (2, 0, 1, 1)
    );
}
