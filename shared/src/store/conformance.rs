//! The one store conformance suite: every backend must pass every case.
//!
//! Each case takes a fresh, empty store and passes explicit instants, so nothing sleeps.
//! Instantiate it with [`crate::store_conformance_tests!`].

use std::collections::HashSet;
use std::time::Duration;

use super::{
    Backlog, Created, ListFilter, ListKey, QueueStats, Settlement, StatusCounts, StoreError,
    TaskCanceller, TaskLister, TaskPurger, TaskQueue, TaskReader, TaskRetrier, TaskWriter,
};
use crate::clock::Timestamp;
use crate::retry::RetryPolicy;
use crate::task::{NewTask, Task, TaskId, TaskStatus};

/// Every capability a full backend has.
pub trait FullStore:
    TaskReader
    + TaskWriter
    + TaskQueue
    + TaskCanceller
    + TaskPurger
    + QueueStats
    + TaskRetrier
    + TaskLister
    + Clone
    + 'static
{
}
impl<S> FullStore for S where
    S: TaskReader
        + TaskWriter
        + TaskQueue
        + TaskCanceller
        + TaskPurger
        + QueueStats
        + TaskRetrier
        + TaskLister
        + Clone
        + 'static
{
}

/// Generates one `#[tokio::test]` per conformance case; `$make` is an async expression that
/// yields a fresh empty store.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@cases $make;
            create_then_get_round_trips,
            get_of_unknown_id_is_none,
            only_due_tasks_are_claimed,
            claims_are_oldest_first_and_limited,
            claim_starts_an_attempt_under_lease,
            a_claimed_task_is_not_claimed_again_while_leased,
            concurrent_claimers_never_share_a_task,
            success_is_recorded,
            retry_makes_the_task_due_again,
            final_failure_is_kept_for_inspection,
            a_lost_lease_cannot_overwrite_the_new_attempt,
            an_expired_lease_makes_the_task_due_again,
            an_expired_final_attempt_fails_the_task,
            release_gives_the_attempt_back,
            cancel_follows_the_status_rules,
            cancel_by_reference_cancels_pending_only,
            duplicate_reference_is_refused_while_active,
            concurrent_duplicate_creates_admit_one,
            purge_deletes_only_old_finished_tasks,
            a_repeated_idempotency_key_returns_the_first_task,
            concurrent_creates_with_one_idempotency_key_make_one_task,
            backlog_counts_what_is_due_and_its_oldest_instant,
            retry_puts_failed_and_cancelled_tasks_back,
            a_retry_stamped_before_the_failure_still_runs,
            a_cancelled_later_task_retried_now_runs_now,
            retry_respects_an_active_reference,
            concurrent_retries_of_one_reference_make_one_active,
            listings_are_newest_first_and_pages_cover_every_match,
            counts_are_per_status
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store = $make.await;
                $crate::store::conformance::$case(store).await;
            }
        )*
    };
}

/// A fixed instant the cases count from.
pub fn t0() -> Timestamp {
    "2030-01-01T00:00:00Z"
        .parse()
        .unwrap_or_else(|_| Timestamp::now_utc())
}

fn at(seconds: u64) -> Timestamp {
    t0().plus(Duration::from_secs(seconds))
}

fn new_task(task_type: &str) -> NewTask {
    NewTask::new(task_type, r#"{"n":1}"#)
}

async fn create_at<S: FullStore>(store: &S, new: NewTask, now: Timestamp) -> Task {
    match store
        .create(Task::from_new(new, now))
        .await
        .expect("create a task")
    {
        Created::New(task) => task,
        Created::Existing(task) => panic!("expected a new task, got existing {}", task.id),
    }
}

/// Creates `count` tasks from `new` at the same moment, each at its own instant.
async fn create_concurrently<S: FullStore>(
    store: &S,
    new: NewTask,
    count: u64,
) -> Vec<Result<Created, StoreError>> {
    let creators: Vec<_> = (0..count)
        .map(|i| {
            let store = store.clone();
            let new = new.clone();
            tokio::spawn(async move { store.create(Task::from_new(new, at(i))).await })
        })
        .collect();
    let mut results = Vec::new();
    for creator in creators {
        results.push(creator.await.expect("creator task"));
    }
    results
}

async fn claim<S: FullStore>(store: &S, now: Timestamp, limit: usize) -> Vec<Task> {
    store
        .claim_due(now, now, limit, now.plus(Duration::from_secs(60)))
        .await
        .expect("claim due tasks")
}

/// Claims at most one task at `at(now)` with a lease until `at(lease)`.
async fn claim_one_leased<S: FullStore>(store: &S, now: u64, lease: u64) -> Vec<Task> {
    store
        .claim_due(at(now), at(now), 1, at(lease))
        .await
        .expect("claim")
}

async fn fetch<S: FullStore>(store: &S, id: TaskId) -> Task {
    store.get(id).await.expect("get").expect("task exists")
}

/// GIVEN a created task WHEN it is read back THEN every field is as created.
pub async fn create_then_get_round_trips<S: FullStore>(store: S) {
    let mut new = new_task("roundTrip");
    new.reference_uid = Some("ref-ü-1".into());
    new.max_attempts = Some(7);
    new.scheduled_at = Some(at(30));
    new.idempotency_key = Some("key-1".into());
    let policy = RetryPolicy {
        initial_interval_ms: 1_500,
        factor: 3.5,
        max_interval_ms: 90_000,
        min_interval_ms: 250,
    };
    let created = Task::from_new_with(new, t0(), 3, policy);
    let created = store.create(created).await.expect("create").into_task();
    assert_eq!(created.max_attempts, 7);
    assert_eq!(created.retry_policy, policy);
    assert_eq!(created.status, TaskStatus::Pending);
    assert_eq!(created.attempts, 0);
    assert_eq!(fetch(&store, created.id).await, created);
}

/// GIVEN an empty store WHEN an unknown id is read THEN there is no task.
pub async fn get_of_unknown_id_is_none<S: FullStore>(store: S) {
    let id = TaskId::new(t0().0);
    assert!(store.get(id).await.expect("get").is_none());
}

/// GIVEN a task due now and one due later WHEN claiming now THEN only the first is claimed.
pub async fn only_due_tasks_are_claimed<S: FullStore>(store: S) {
    let now_task = create_at(&store, new_task("t"), t0()).await;
    let mut later = new_task("t");
    later.scheduled_at = Some(at(3600));
    let later_task = create_at(&store, later, t0()).await;

    let claimed = claim(&store, at(1), 10).await;
    assert_eq!(ids(&claimed), vec![now_task.id]);
    store
        .settle(&claimed[0], Settlement::Succeeded, at(2))
        .await
        .expect("settle");
    assert!(claim(&store, at(3599), 10).await.is_empty());
    assert_eq!(ids(&claim(&store, at(3600), 10).await), vec![later_task.id]);
}

fn ids(tasks: &[Task]) -> Vec<TaskId> {
    tasks.iter().map(|t| t.id).collect()
}

/// GIVEN tasks scheduled in reverse creation order WHEN claiming with a limit THEN the earliest
/// scheduled come first and no more than the limit.
pub async fn claims_are_oldest_first_and_limited<S: FullStore>(store: S) {
    let mut created = Vec::new();
    for i in 0..6u64 {
        let mut new = new_task("t");
        new.scheduled_at = Some(at(100 - i * 10));
        created.push(create_at(&store, new, t0()).await);
    }
    let first = claim(&store, at(200), 4).await;
    let mut first_sorted = first.clone();
    first_sorted.sort_by_key(|t| t.scheduled_at);
    assert_eq!(first.len(), 4);
    assert_eq!(
        ids(&first_sorted),
        ids(&[
            created[5].clone(),
            created[4].clone(),
            created[3].clone(),
            created[2].clone(),
        ])
    );
    let rest = claim(&store, at(200), 4).await;
    assert_eq!(rest.len(), 2);
}

/// GIVEN a due task WHEN claimed THEN it is running, its attempt counted, its lease set.
pub async fn claim_starts_an_attempt_under_lease<S: FullStore>(store: S) {
    let task = create_at(&store, new_task("t"), t0()).await;
    let lease = at(61);
    let claimed = store
        .claim_due(at(1), at(1), 10, lease)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let running = &claimed[0];
    assert_eq!(running.status, TaskStatus::Running);
    assert_eq!(running.attempts, 1);
    assert_eq!(running.lease_expires_at, Some(lease));
    assert_eq!(running.updated_at, at(1));
    assert_eq!(&fetch(&store, task.id).await, running);
}

/// GIVEN a claimed task WHEN another claim runs before the lease ends THEN it gets nothing.
pub async fn a_claimed_task_is_not_claimed_again_while_leased<S: FullStore>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    assert_eq!(claim(&store, at(1), 10).await.len(), 1);
    assert!(claim(&store, at(2), 10).await.is_empty());
    assert!(claim(&store, at(60), 10).await.is_empty());
}

/// GIVEN 60 due tasks WHEN 4 claimers race THEN every task is claimed exactly once.
pub async fn concurrent_claimers_never_share_a_task<S: FullStore>(store: S) {
    let mut all = HashSet::new();
    for _ in 0..60 {
        all.insert(create_at(&store, new_task("t"), t0()).await.id);
    }
    let mut claimers = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = claim(&store, at(1), 7).await;
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(ids(&batch));
            }
        }));
    }
    let mut seen = Vec::new();
    for claimer in claimers {
        seen.extend(claimer.await.expect("claimer task"));
    }
    let unique: HashSet<TaskId> = seen.iter().copied().collect();
    assert_eq!(seen.len(), unique.len(), "a task was claimed twice");
    assert_eq!(unique, all);
}

/// GIVEN a claimed task WHEN settled as succeeded THEN it is succeeded and finished.
pub async fn success_is_recorded<S: FullStore>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    let running = claim(&store, at(1), 1).await.remove(0);
    let done = store
        .settle(&running, Settlement::Succeeded, at(2))
        .await
        .expect("settle");
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(done.succeeded_at, Some(at(2)));
    assert_eq!(done.finished_at, Some(at(2)));
    assert_eq!(done.lease_expires_at, None);
    assert_eq!(fetch(&store, running.id).await, done);
    assert!(claim(&store, at(1000), 10).await.is_empty());
}

/// GIVEN a failed attempt with attempts left WHEN retried THEN it is pending until `retry_at`,
/// keeps the error, and the next claim counts attempt 2.
pub async fn retry_makes_the_task_due_again<S: FullStore>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    let running = claim(&store, at(1), 1).await.remove(0);
    let retry = Settlement::Retry {
        error: "HTTP 503".into(),
        retry_at: at(30),
    };
    let pending = store.settle(&running, retry, at(2)).await.expect("settle");
    assert_eq!(pending.status, TaskStatus::Pending);
    assert_eq!(pending.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(pending.last_failed_attempt_at, Some(at(2)));
    assert_eq!(pending.finished_at, None);
    assert!(claim(&store, at(29), 10).await.is_empty());
    let again = claim(&store, at(30), 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
}

/// GIVEN a final failure WHEN settled THEN the task is failed, finished and never claimed again.
pub async fn final_failure_is_kept_for_inspection<S: FullStore>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    let running = claim(&store, at(1), 1).await.remove(0);
    let failed = store
        .settle(
            &running,
            Settlement::Failed {
                error: "boom".into(),
            },
            at(2),
        )
        .await
        .expect("settle");
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(failed.finished_at, Some(at(2)));
    assert_eq!(
        fetch(&store, running.id).await.last_error.as_deref(),
        Some("boom")
    );
    assert!(claim(&store, at(1000), 10).await.is_empty());
}

/// GIVEN a lease that expired and a second claim WHEN the first processor settles THEN it is
/// refused and the second attempt's outcome stands.
pub async fn a_lost_lease_cannot_overwrite_the_new_attempt<S: FullStore>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    let first = claim_one_leased(&store, 1, 10).await.remove(0);
    let second = claim_one_leased(&store, 11, 100).await.remove(0);
    assert_eq!(second.attempts, 2);
    let late = store.settle(&first, Settlement::Succeeded, at(12)).await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost(id)) if id == first.id),
        "{late:?}"
    );
    let current = fetch(&store, first.id).await;
    assert_eq!(current.status, TaskStatus::Running);
    assert_eq!(current.attempts, 2);
    store
        .settle(&second, Settlement::Succeeded, at(13))
        .await
        .expect("the new holder settles");
}

/// GIVEN a running task whose processor died WHEN its lease expires THEN it is claimable again.
pub async fn an_expired_lease_makes_the_task_due_again<S: FullStore>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    claim_one_leased(&store, 1, 10).await;
    assert!(claim_one_leased(&store, 9, 20).await.is_empty());
    let again = claim_one_leased(&store, 10, 20).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
}

/// GIVEN the final attempt's lease expired WHEN claiming THEN the task fails instead of running.
pub async fn an_expired_final_attempt_fails_the_task<S: FullStore>(store: S) {
    let mut new = new_task("t");
    new.max_attempts = Some(1);
    let task = create_at(&store, new, t0()).await;
    claim_one_leased(&store, 1, 10).await;
    assert!(claim_one_leased(&store, 11, 20).await.is_empty());
    let failed = fetch(&store, task.id).await;
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(failed.attempts, 1);
    assert!(
        failed
            .last_error
            .unwrap_or_default()
            .contains("lease expired")
    );
}

/// GIVEN a claimed task that never started WHEN released THEN it is pending with the attempt
/// given back.
pub async fn release_gives_the_attempt_back<S: FullStore>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    let running = claim(&store, at(1), 1).await.remove(0);
    let released = store
        .settle(&running, Settlement::Released, at(2))
        .await
        .expect("release");
    assert_eq!(released.status, TaskStatus::Pending);
    assert_eq!(released.attempts, 0);
    assert_eq!(claim(&store, at(3), 1).await.len(), 1);
}

/// Cancel: pending → cancelled; cancelled, running and missing tasks are refused.
pub async fn cancel_follows_the_status_rules<S: FullStore>(store: S) {
    let pending = create_at(&store, new_task("t"), t0()).await;
    let cancelled = store.cancel(pending.id, at(5)).await.expect("cancel");
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(cancelled.finished_at, Some(at(5)));
    assert_eq!(fetch(&store, pending.id).await, cancelled);
    assert!(matches!(
        store.cancel(pending.id, at(6)).await,
        Err(StoreError::Conflict {
            status: TaskStatus::Cancelled,
            ..
        })
    ));
    assert!(
        claim(&store, at(100), 10).await.is_empty(),
        "cancelled tasks never run"
    );

    let running = create_at(&store, new_task("t"), t0()).await;
    claim(&store, at(1), 1).await;
    assert!(matches!(
        store.cancel(running.id, at(6)).await,
        Err(StoreError::Conflict {
            status: TaskStatus::Running,
            ..
        })
    ));
    let missing = TaskId::new(at(999).0);
    assert!(matches!(
        store.cancel(missing, at(6)).await,
        Err(StoreError::NotFound(id)) if id == missing
    ));
}

/// GIVEN tasks sharing a reference in several states WHEN cancelled by reference THEN only the
/// pending ones (of the given type) are cancelled.
pub async fn cancel_by_reference_cancels_pending_only<S: FullStore>(store: S) {
    let with_ref = |task_type: &str, reference: &str| {
        let mut new = new_task(task_type);
        new.reference_uid = Some(reference.into());
        new
    };
    let email = create_at(&store, with_ref("email", "booking-1"), t0()).await;
    let mut later = with_ref("webhook", "booking-1");
    later.scheduled_at = Some(at(500));
    let webhook = create_at(&store, later, t0()).await;
    let other = create_at(&store, with_ref("email", "booking-2"), t0()).await;
    // The email task is running, so it cannot be cancelled.
    let running = claim(&store, at(1), 10).await;
    assert_eq!(running.len(), 2);

    let none = store
        .cancel_by_reference("booking-1", Some("email"), at(2))
        .await
        .expect("cancel");
    assert!(none.is_empty());
    let cancelled = store
        .cancel_by_reference("booking-1", None, at(2))
        .await
        .expect("cancel");
    assert_eq!(cancelled, vec![webhook.id]);
    assert_eq!(
        fetch(&store, webhook.id).await.status,
        TaskStatus::Cancelled
    );
    assert_eq!(fetch(&store, email.id).await.status, TaskStatus::Running);
    assert_eq!(fetch(&store, other.id).await.status, TaskStatus::Running);
    assert!(
        store
            .cancel_by_reference("no-such-ref", None, at(2))
            .await
            .expect("cancel")
            .is_empty()
    );
}

/// GIVEN an active task with a reference WHEN another with the same reference and type is
/// created THEN it is refused naming the first; another type, or a finished first, is fine.
pub async fn duplicate_reference_is_refused_while_active<S: FullStore>(store: S) {
    let mut new = new_task("email");
    new.reference_uid = Some("booking-9".into());
    let first = create_at(&store, new.clone(), t0()).await;

    let again = store.create(Task::from_new(new.clone(), at(1))).await;
    assert!(
        matches!(again, Err(StoreError::Duplicate { existing }) if existing == first.id),
        "{again:?}"
    );

    let mut other_type = new.clone();
    other_type.task_type = "sms".into();
    create_at(&store, other_type, at(1)).await;

    // Still a duplicate while running.
    let running = claim(&store, at(2), 10)
        .await
        .into_iter()
        .find(|t| t.id == first.id)
        .expect("first is claimed");
    assert!(matches!(
        store.create(Task::from_new(new.clone(), at(3))).await,
        Err(StoreError::Duplicate { .. })
    ));
    store
        .settle(&running, Settlement::Succeeded, at(4))
        .await
        .expect("settle");
    let second = create_at(&store, new.clone(), at(5)).await;
    assert_ne!(second.id, first.id);

    // A cancelled holder frees the reference too.
    store.cancel(second.id, at(6)).await.expect("cancel");
    create_at(&store, new, at(7)).await;
}

/// GIVEN 8 creates with one reference at the same moment THEN exactly one is stored.
pub async fn concurrent_duplicate_creates_admit_one<S: FullStore>(store: S) {
    let mut new = new_task("email");
    new.reference_uid = Some("booking-race".into());
    let mut created = Vec::new();
    let mut duplicates = 0;
    for result in create_concurrently(&store, new, 8).await {
        match result {
            Ok(task) => created.push(task.task().id),
            Err(StoreError::Duplicate { .. }) => duplicates += 1,
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one create wins");
    assert_eq!(duplicates, 7);
}

/// GIVEN finished tasks of several ages and active tasks WHEN purging THEN only finished tasks
/// at or before the cutoff are deleted, and their references are free again.
pub async fn purge_deletes_only_old_finished_tasks<S: FullStore>(store: S) {
    let pending = create_at(&store, new_task("t"), t0()).await;
    let mut later = new_task("t");
    later.scheduled_at = Some(at(10_000));
    let future = create_at(&store, later, t0()).await;
    let mut with_ref = new_task("t");
    with_ref.reference_uid = Some("purged-ref".into());
    let old_cancelled = create_at(&store, with_ref.clone(), t0()).await;
    store.cancel(old_cancelled.id, at(1)).await.expect("cancel");
    let running = claim(&store, at(2), 1).await.remove(0);
    assert_eq!(running.id, pending.id);
    let to_finish = create_at(&store, new_task("t"), at(3)).await;
    let claimed = claim(&store, at(4), 1).await.remove(0);
    assert_eq!(claimed.id, to_finish.id);
    store
        .settle(&claimed, Settlement::Succeeded, at(100))
        .await
        .expect("settle");

    let reported = std::sync::atomic::AtomicU64::new(0);
    let deleted = store
        .purge_finished_before(at(50), &|chunk| {
            reported.fetch_add(chunk, std::sync::atomic::Ordering::Relaxed);
        })
        .await
        .expect("purge");
    assert_eq!(deleted, 1);
    assert_eq!(reported.into_inner(), 1, "progress reports every deletion");
    assert!(store.get(old_cancelled.id).await.expect("get").is_none());
    for kept in [pending.id, future.id, to_finish.id] {
        assert!(store.get(kept).await.expect("get").is_some());
    }
    assert_eq!(
        store
            .purge_finished_before(at(100), &|_| ())
            .await
            .expect("purge"),
        1
    );
    assert_eq!(
        store
            .purge_finished_before(at(100), &|_| ())
            .await
            .expect("purge"),
        0
    );
    assert!(store.get(pending.id).await.expect("get").is_some());
    create_at(&store, with_ref, at(101)).await;
}

/// GIVEN a task created with an idempotency key WHEN the same key and type come again (even
/// after it finished) THEN the first task is returned; another type or key makes a new task;
/// once purged, the key is free.
pub async fn a_repeated_idempotency_key_returns_the_first_task<S: FullStore>(store: S) {
    let keyed = |task_type: &str, key: &str| {
        let mut new = new_task(task_type);
        new.idempotency_key = Some(key.into());
        new
    };
    let first = create_at(&store, keyed("email", "order-1"), t0()).await;
    let again = store
        .create(Task::from_new(keyed("email", "order-1"), at(1)))
        .await
        .expect("create");
    assert_eq!(again, Created::Existing(first.clone()));
    assert_ne!(
        create_at(&store, keyed("sms", "order-1"), at(1)).await.id,
        first.id
    );
    assert_ne!(
        create_at(&store, keyed("email", "order-2"), at(1)).await.id,
        first.id
    );

    store.cancel(first.id, at(2)).await.expect("cancel");
    let after_finish = store
        .create(Task::from_new(keyed("email", "order-1"), at(3)))
        .await
        .expect("create");
    assert!(
        matches!(after_finish, Created::Existing(ref t) if t.id == first.id && t.status == TaskStatus::Cancelled)
    );

    store
        .purge_finished_before(at(2), &|_| ())
        .await
        .expect("purge");
    let fresh = create_at(&store, keyed("email", "order-1"), at(4)).await;
    assert_ne!(fresh.id, first.id);
}

/// GIVEN 8 creates with one idempotency key at the same moment THEN one task is made and every
/// caller gets it.
pub async fn concurrent_creates_with_one_idempotency_key_make_one_task<S: FullStore>(store: S) {
    let mut new = new_task("email");
    new.idempotency_key = Some("order-race".into());
    let mut new_ids = Vec::new();
    let mut seen = HashSet::new();
    for result in create_concurrently(&store, new, 8).await {
        match result.expect("create") {
            Created::New(task) => {
                new_ids.push(task.id);
                seen.insert(task.id);
            }
            Created::Existing(task) => {
                seen.insert(task.id);
            }
        }
    }
    assert_eq!(new_ids.len(), 1, "exactly one create makes the task");
    assert_eq!(seen.len(), 1, "every caller gets the same task");
}

/// GIVEN a task that failed at t=101 WHEN a host whose clock says t=50 retries it THEN it is due
/// just after its failure, and the next claim runs it.
pub async fn a_retry_stamped_before_the_failure_still_runs<S: FullStore>(store: S) {
    let mut new = new_task("t");
    new.max_attempts = Some(1);
    let task = create_at(&store, new, at(100)).await;
    let claimed = claim(&store, at(100), 10).await;
    assert_eq!(ids(&claimed), vec![task.id]);
    let failed = Settlement::Failed { error: "no".into() };
    store
        .settle(&claimed[0], failed, at(101))
        .await
        .expect("settle");
    let retried = store.retry(task.id, at(50)).await.expect("retry");
    assert_eq!(retried.status, TaskStatus::Pending);
    assert!(retried.scheduled_at > at(101), "{retried:?}");
    assert!(claim(&store, at(101), 10).await.is_empty());
    assert_eq!(ids(&claim(&store, at(102), 10).await), vec![task.id]);
}

/// GIVEN a task scheduled an hour ahead, cancelled WHEN retried now THEN it runs now (its queue
/// entry moves to an earlier instant).
pub async fn a_cancelled_later_task_retried_now_runs_now<S: FullStore>(store: S) {
    let mut new = new_task("t");
    new.scheduled_at = Some(at(3600));
    let task = create_at(&store, new, at(0)).await;
    assert!(claim(&store, at(10), 10).await.is_empty());
    store.cancel(task.id, at(20)).await.expect("cancel");
    store.retry(task.id, at(30)).await.expect("retry");
    assert_eq!(ids(&claim(&store, at(31), 10).await), vec![task.id]);
}

/// GIVEN due, future, running and finished tasks WHEN the backlog is read THEN it counts the due
/// ones and names the oldest instant among them.
pub async fn backlog_counts_what_is_due_and_its_oldest_instant<S: FullStore>(store: S) {
    assert_eq!(
        store.backlog(t0()).await.expect("backlog"),
        Backlog::default()
    );
    for offset in [0, 5, 10] {
        let mut new = new_task("t");
        new.scheduled_at = Some(at(offset));
        create_at(&store, new, t0()).await;
    }
    let mut later = new_task("t");
    later.scheduled_at = Some(at(1000));
    create_at(&store, later, t0()).await;
    let running = claim(&store, at(20), 1).await;
    assert_eq!(running.len(), 1);

    let backlog = store.backlog(at(20)).await.expect("backlog");
    assert_eq!(backlog.due, 2);
    assert_eq!(backlog.oldest_due_at, Some(at(5)));
}

/// GIVEN a failed and a cancelled task WHEN retried THEN each is pending, due now, with a fresh
/// attempt budget and its history kept; other statuses and unknown ids are refused.
pub async fn retry_puts_failed_and_cancelled_tasks_back<S: FullStore>(store: S) {
    let mut new = new_task("t");
    new.max_attempts = Some(1);
    let failing = create_at(&store, new, t0()).await;
    let running = claim(&store, at(1), 1).await.remove(0);
    let error = Settlement::Failed {
        error: "boom".into(),
    };
    store.settle(&running, error, at(2)).await.expect("settle");

    let retried = store.retry(failing.id, at(10)).await.expect("retry");
    assert_eq!(retried.status, TaskStatus::Pending);
    assert_eq!(retried.attempts, 0);
    assert_eq!(retried.scheduled_at, at(10));
    assert_eq!(retried.finished_at, None);
    assert_eq!(retried.last_error.as_deref(), Some("boom"));
    assert_eq!(retried.last_failed_attempt_at, Some(at(2)));
    assert_eq!(fetch(&store, failing.id).await, retried);
    assert!(claim(&store, at(9), 10).await.is_empty());
    assert_eq!(ids(&claim(&store, at(10), 10).await), vec![failing.id]);
    assert!(matches!(
        store.retry(failing.id, at(11)).await,
        Err(StoreError::Conflict {
            status: TaskStatus::Running,
            ..
        })
    ));

    let cancelled = create_at(&store, new_task("t"), t0()).await;
    store.cancel(cancelled.id, at(3)).await.expect("cancel");
    assert_eq!(
        store
            .retry(cancelled.id, at(12))
            .await
            .expect("retry")
            .status,
        TaskStatus::Pending
    );
    assert!(matches!(
        store.retry(cancelled.id, at(13)).await,
        Err(StoreError::Conflict {
            status: TaskStatus::Pending,
            ..
        })
    ));
    let missing = TaskId::new(at(777).0);
    assert!(
        matches!(store.retry(missing, at(13)).await, Err(StoreError::NotFound(id)) if id == missing)
    );
}

/// GIVEN a cancelled task whose reference another pending task now holds WHEN it is retried
/// THEN it is refused naming the holder; once the holder is gone the retry takes the reference.
pub async fn retry_respects_an_active_reference<S: FullStore>(store: S) {
    let mut new = new_task("email");
    new.reference_uid = Some("booking-retry".into());
    let first = create_at(&store, new.clone(), t0()).await;
    store.cancel(first.id, at(1)).await.expect("cancel");
    let second = create_at(&store, new.clone(), at(2)).await;

    let refused = store.retry(first.id, at(3)).await;
    assert!(
        matches!(refused, Err(StoreError::Duplicate { existing }) if existing == second.id),
        "{refused:?}"
    );
    assert_eq!(fetch(&store, first.id).await.status, TaskStatus::Cancelled);

    store.cancel(second.id, at(4)).await.expect("cancel");
    store.retry(first.id, at(5)).await.expect("retry");
    let again = store.create(Task::from_new(new, at(6))).await;
    assert!(
        matches!(again, Err(StoreError::Duplicate { existing }) if existing == first.id),
        "{again:?}"
    );
}

/// GIVEN two cancelled tasks with the same reference WHEN both are retried at the same moment
/// THEN exactly one becomes pending; the other is refused naming it.
pub async fn concurrent_retries_of_one_reference_make_one_active<S: FullStore>(store: S) {
    for round in 0..5u64 {
        let mut new = new_task("email");
        new.reference_uid = Some(format!("booking-retry-race-{round}"));
        let first = create_at(&store, new.clone(), t0()).await;
        store.cancel(first.id, at(1)).await.expect("cancel");
        let second = create_at(&store, new, at(2)).await;
        store.cancel(second.id, at(3)).await.expect("cancel");

        let retries: Vec<_> = [first.id, second.id]
            .into_iter()
            .map(|id| {
                let store = store.clone();
                tokio::spawn(async move { store.retry(id, at(10)).await })
            })
            .collect();
        let mut active = Vec::new();
        let mut refused = 0;
        for retry in retries {
            match retry.await.expect("retry task") {
                Ok(task) => active.push(task.id),
                Err(StoreError::Duplicate { .. } | StoreError::Unavailable(_)) => refused += 1,
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(active.len(), 1, "round {round}: exactly one retry wins");
        assert_eq!(refused, 1);
        let pending: Vec<TaskId> = [first.id, second.id]
            .into_iter()
            .filter(|id| active.contains(id))
            .collect();
        assert_eq!(pending.len(), 1);
        let mut statuses = Vec::new();
        for id in [first.id, second.id] {
            statuses.push(fetch(&store, id).await.status);
        }
        let pending_now = statuses
            .iter()
            .filter(|s| **s == TaskStatus::Pending)
            .count();
        assert_eq!(pending_now, 1, "round {round}: {statuses:?}");
    }
}

/// Every page of a listing from the start, checking each page's size; the ids in order.
async fn walk<S: FullStore>(store: &S, filter: &ListFilter, limit: usize) -> Vec<TaskId> {
    let mut listed = Vec::new();
    let mut after = None;
    for _ in 0..1000 {
        let page = store
            .list(filter, after.clone(), limit, at(40))
            .await
            .expect("list a page");
        assert!(page.tasks.len() <= limit, "a page holds at most the limit");
        listed.extend(ids(&page.tasks));
        match page.next {
            Some(next) => {
                assert!(
                    after.as_ref().is_none_or(|after| &next < after),
                    "pages advance"
                );
                after = Some(next);
            }
            None => return listed,
        }
    }
    panic!("the listing did not end");
}

/// The tasks with `ids` as stored now, newest first: the order every listing must give.
async fn newest_first<S: FullStore>(store: &S, filter: &ListFilter, all: &[TaskId]) -> Vec<TaskId> {
    let mut tasks = Vec::new();
    for &id in all {
        let task = fetch(store, id).await;
        if filter.matches(&task) {
            tasks.push((ListKey::of(&task), id));
        }
    }
    tasks.sort_by(|a, b| b.0.cmp(&a.0));
    tasks.into_iter().map(|(_, id)| id).collect()
}

/// GIVEN tasks in every status, of two types, some sharing a reference and many sharing an
/// instant WHEN listed with each filter and page size THEN pages hold at most the limit and
/// together list every match exactly once, newest first (queue instant, then id).
pub async fn listings_are_newest_first_and_pages_cover_every_match<S: FullStore>(store: S) {
    let mut all = Vec::new();
    for i in 0..24u64 {
        let mut new = new_task(if i % 3 == 0 { "email" } else { "webhook" });
        // Groups of four share a due instant, so order among them falls to the id.
        new.scheduled_at = Some(at(i / 4));
        new.max_attempts = Some(1);
        if i % 5 == 0 {
            new.reference_uid = Some(format!("booking-{}", i % 4));
        }
        all.push(create_at(&store, new, t0()).await.id);
    }
    // 6 claimed at t=10: 2 succeed, 2 fail, 2 stay running; 3 more cancelled.
    let claimed = claim(&store, at(10), 6).await;
    assert_eq!(claimed.len(), 6);
    for (i, task) in claimed.iter().enumerate().take(4) {
        let outcome = if i < 2 {
            Settlement::Succeeded
        } else {
            Settlement::Failed {
                error: "boom".into(),
            }
        };
        store
            .settle(task, outcome, at(20 + i as u64))
            .await
            .expect("settle");
    }
    let mut cancelled = 0;
    for &id in &all {
        if cancelled < 3 && fetch(&store, id).await.status == TaskStatus::Pending {
            store.cancel(id, at(30)).await.expect("cancel");
            cancelled += 1;
        }
    }

    let mut filters = vec![ListFilter::default()];
    for status in TaskStatus::ALL {
        filters.push(ListFilter {
            status: Some(status),
            ..ListFilter::default()
        });
    }
    filters.push(ListFilter {
        task_type: Some("email".into()),
        ..ListFilter::default()
    });
    filters.push(ListFilter {
        status: Some(TaskStatus::Pending),
        task_type: Some("webhook".into()),
        ..ListFilter::default()
    });
    filters.push(ListFilter {
        reference_uid: Some("booking-0".into()),
        ..ListFilter::default()
    });
    filters.push(ListFilter {
        reference_uid: Some("booking-0".into()),
        status: Some(TaskStatus::Pending),
        task_type: Some("webhook".into()),
    });
    for filter in &filters {
        let expected = newest_first(&store, filter, &all).await;
        for limit in [1, 5, 100] {
            assert_eq!(
                walk(&store, filter, limit).await,
                expected,
                "filter {filter:?}, limit {limit}"
            );
        }
    }
    let none = ListFilter {
        reference_uid: Some("no-such-reference".into()),
        ..ListFilter::default()
    };
    assert!(walk(&store, &none, 10).await.is_empty());
}

/// GIVEN tasks in every status WHEN counted THEN each status has its own count.
pub async fn counts_are_per_status<S: FullStore>(store: S) {
    assert_eq!(
        store.counts(t0()).await.expect("counts"),
        StatusCounts::default()
    );
    for i in 0..7 {
        let mut new = new_task("t");
        new.max_attempts = Some(1);
        create_at(&store, new, at(i)).await;
    }
    let claimed = claim(&store, at(10), 4).await;
    store
        .settle(&claimed[0], Settlement::Succeeded, at(11))
        .await
        .expect("settle");
    store
        .settle(
            &claimed[1],
            Settlement::Failed { error: "no".into() },
            at(11),
        )
        .await
        .expect("settle");
    let pending = claim(&store, at(10), 1).await;
    store
        .settle(&pending[0], Settlement::Released, at(11))
        .await
        .expect("release");
    let victim = pending[0].id;
    store.cancel(victim, at(12)).await.expect("cancel");
    let counts = store.counts(at(12)).await.expect("counts");
    assert_eq!(
        counts,
        StatusCounts {
            pending: 2,
            running: 2,
            succeeded: 1,
            failed: 1,
            cancelled: 1,
        }
    );
    assert_eq!(counts.total(), 7);
}
