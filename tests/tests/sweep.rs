//! The sweep below the DynamoDB due queue's watermarks (`tasker::store::dynamodb::sweep`): a
//! task whose index entry landed below a watermark, which no scan reads, is found by the
//! nightly cleanup, logged, counted in its summary and metrics, and runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tasker::store::dynamodb::due::{MARGIN, WATERMARK_MAX_LAG};

use tasker::{DynamoStore, ManualClock, NewTask, ProcessorSettings, Registry, Task, Tasker};
use tasker_tests::capacity::{CapacityProxy, measured_reads};
use tasker_tests::fixtures::at;
use tasker_tests::queue::{create, finished_below_watermarks, run_all, write_units};
use tasker_tests::{dynamo, events};

/// GIVEN a pending task whose entry is below the watermark (written with an instant the
/// watermark passed already, as an index that lagged for hours would show it).
async fn a_stranded_task(store: &DynamoStore) -> (Task, tasker::Timestamp) {
    let (_, later) = finished_below_watermarks(store).await;
    let late = Task::from_new(NewTask::new("noop", "{}"), at(5));
    store.task_create(late.clone()).await.expect("create");
    assert!(
        run_all(store, later).await.is_empty(),
        "no scan sees an entry below the watermark"
    );
    (late, later)
}

#[tokio::test]
async fn a_task_below_the_watermark_is_swept_back_and_runs_once() {
    let proxy = CapacityProxy::start(&dynamo::endpoint()).await;
    let store = dynamo::fresh_store_at(&proxy.endpoint).await;
    let (late, later) = a_stranded_task(&store).await;

    // WHEN the cleanup event runs (its sweep reads the 121 entries below the watermarks)
    let clock = Arc::new(ManualClock::new(later));
    let tasker = Tasker::with_clock(
        store.clone(),
        Registry::new(),
        ProcessorSettings::default(),
        clock,
    );
    let settings = cleanup::CleanupSettings {
        age: Duration::from_secs(3650 * 86_400),
        sweep_entries: 10_000,
        service: "tasker-test",
    };
    let lines = Mutex::new(Vec::new());
    let emit = |line: &str| lines.lock().expect("lines").push(line.to_owned());
    proxy.take();
    let event = events::scheduled("scheduled-cleanup.json", Duration::from_secs(60));
    let summary = cleanup::handle(&tasker, settings, event, &emit)
        .await
        .expect("cleanup");
    let ledger = proxy.take();

    // THEN the summary and the metric count one rescue among the entries read
    assert_eq!(
        (summary.deleted, summary.swept, summary.rescued),
        (0, 121, 1)
    );
    assert!(summary.sweep_complete);
    let line: Value = serde_json::from_str(&lines.into_inner().expect("lines")[0]).expect("EMF");
    assert_eq!(line["Rescued"], 1);
    assert_eq!(line["SweptEntries"], 121);
    // AND what it cost: half a read unit per entry for its item, plus the index pages
    let reads = measured_reads(&ledger, &["BatchGetItem", "Query"]);
    let (table, index, _) = write_units(&ledger);
    eprintln!(
        "sweep of 121 entries below the watermarks: {reads} read units ({:.3} per entry), \
         {table} + {index} write units (the rescue and the sweep's progress)",
        reads / 121.0
    );
    assert!(reads / 121.0 <= 0.6, "{reads} read units for 121 entries");
    assert!(
        reads / 121.0 >= 0.5,
        "each entry's item is read: {reads} units for 121"
    );

    // AND the task is due at once: the next scan claims it, its one attempt
    let rescued = store.task_get(late.id).await.expect("get").expect("kept");
    assert_eq!(rescued.scheduled_at, later);
    let claimed = run_all(&store, later.plus(Duration::from_secs(1))).await;
    assert_eq!(
        claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![late.id]
    );
    assert_eq!(claimed[0].attempts, 1);

    // AND a second sweep (a new pass from the bottom) finds nothing to rescue: the task's
    // entry is above the watermark now
    let again = store
        .queue_sweep(later.plus(Duration::from_secs(5)), 10_000)
        .await
        .expect("sweep");
    assert_eq!(
        (again.entries, again.rescued, again.complete),
        (120, 0, true)
    );
}

/// GIVEN 60 finished tasks two days older than 60 others, watermarks past both, and a task
/// stranded among the old ones, out of the window every sweep reads WHEN sweeps read at most 50
/// entries each THEN their pass over the old region goes on where the last stopped, until it
/// reaches the window, and rescues the stranded task once.
#[tokio::test]
async fn capped_sweeps_pass_over_the_older_entries_in_turn() {
    const DAY: u64 = 86_400;
    let store = dynamo::fresh_store().await;
    for i in 0..60 {
        create(&store, at(i / 10)).await;
        create(&store, at(2 * DAY + i / 10)).await;
    }
    assert_eq!(run_all(&store, at(2 * DAY + 20)).await.len(), 120);
    let later = at(2 * DAY + 20).plus(WATERMARK_MAX_LAG + MARGIN);
    assert!(
        run_all(&store, later).await.is_empty(),
        "raises the watermarks"
    );
    let stranded = Task::from_new(NewTask::new("noop", "{}"), at(3));
    store.task_create(stranded.clone()).await.expect("create");

    let mut rescued = 0;
    let mut sweeps = 0;
    loop {
        let summary = store.queue_sweep(later, 50).await.expect("sweep");
        assert!(summary.entries <= 50, "{summary:?}");
        rescued += summary.rescued;
        sweeps += 1;
        if summary.complete {
            break;
        }
        assert!(sweeps < 10, "the pass goes on");
    }
    assert!(
        sweeps >= 2,
        "61 old entries take more than one capped pass: {sweeps}"
    );
    assert_eq!(rescued, 1);
    let task = store
        .task_get(stranded.id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(task.scheduled_at, later);
}
