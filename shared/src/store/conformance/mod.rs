//! The one store conformance suite: every backend must pass every case, like River's driver
//! test suite. Cases are grouped by capability, one module each; every case takes a fresh,
//! empty store and passes explicit instants, so nothing sleeps. Instantiate the whole suite
//! with [`crate::store_conformance_tests!`].

mod blocked;
mod cancel;
mod claim;
mod create;
mod delivery;
mod flow;
mod keys;
mod listing;
mod purge;
mod retry;
mod schedules;
mod transitions;

use std::collections::HashSet;
use std::time::Duration;

pub use self::blocked::*;
pub use self::cancel::*;
pub use self::claim::*;
pub use self::create::*;
pub use self::delivery::*;
pub use self::flow::*;
pub use self::keys::*;
pub use self::listing::*;
pub use self::purge::*;
pub use self::retry::*;
pub use self::schedules::*;
pub use self::transitions::*;
pub use super::Store;
use super::{
    Backlog, Claim, ClaimById, ClaimedById, Created, Deliverable, Leases, ListFilter, ListPage,
    OPEN_GATE, PausedTypes, Settlement, StatusCounts, StoreError,
};
use crate::clock::Timestamp;
use crate::retry::RetryPolicy;
use crate::task::{NewTask, Task, TaskId, TaskStatus};

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
            claim_leases_each_task_for_its_type,
            a_claimed_task_is_not_claimed_again_while_leased,
            concurrent_claimers_never_share_a_task,
            success_is_recorded,
            retry_makes_the_task_due_again,
            final_failure_is_kept_for_inspection,
            a_lost_lease_cannot_overwrite_the_new_attempt,
            an_expired_lease_makes_the_task_due_again,
            an_expired_final_attempt_fails_the_task,
            release_gives_the_attempt_back,
            a_repeated_outcome_is_recognised_as_written,
            a_late_outcome_after_an_expiry_is_a_lost_lease,
            cancel_follows_the_status_rules,
            cancel_by_reference_cancels_pending_only,
            duplicate_reference_is_refused_while_active,
            concurrent_duplicate_creates_admit_one,
            purge_deletes_only_old_finished_tasks,
            a_sweep_leaves_tasks_in_sight_alone,
            a_repeated_idempotency_key_returns_the_first_task,
            concurrent_creates_with_one_idempotency_key_make_one_task,
            backlog_counts_what_is_due_and_its_oldest_instant,
            retry_puts_failed_and_cancelled_tasks_back,
            a_retry_stamped_before_the_failure_still_runs,
            a_cancelled_later_task_retried_now_runs_now,
            retry_respects_an_active_reference,
            concurrent_retries_of_one_reference_make_one_active,
            listings_are_newest_first_and_pages_cover_every_match,
            counts_are_per_status,
            a_claim_stores_what_the_transition_defines,
            every_settlement_stores_what_the_transition_defines,
            an_expiry_stores_what_the_transition_defines,
            a_cancel_stores_what_the_transition_defines,
            a_retry_stores_what_the_transition_defines,
            a_claim_by_id_claims_a_due_task_once,
            a_claim_by_id_refuses_what_is_not_due,
            a_claim_by_id_takes_over_an_expired_lease,
            deliverable_tasks_are_due_by_the_horizon,
            deliverable_fails_an_expired_final_attempt,
            schedules_are_created_once_and_read_back,
            a_schedule_write_is_conditioned_on_its_revision,
            a_deleted_schedule_is_gone,
            due_schedules_are_the_running_ones_whose_tick_came,
            a_tick_task_stored_twice_is_stored_once_and_listed_by_schedule,
            a_paused_type_is_not_claimed_until_resumed,
            a_gate_caps_a_type_within_one_claim,
            type_counts_are_due_and_running_per_type,
            throughput_counts_what_finished_lately,
            claims_right_after_a_capped_one_take_the_rest,
            deliverable_tasks_leave_out_paused_types,
            a_long_lease_ahead_does_not_slow_claims,
            a_paused_backlog_ahead_does_not_slow_claims,
            a_capped_backlog_ahead_does_not_slow_claims,
            a_key_at_its_concurrency_limit_holds_the_rest,
            a_held_task_is_due_when_its_holders_lease_ends,
            a_rate_key_starts_one_task_per_interval,
            concurrent_claimers_never_pass_a_keys_limit,
            a_late_outcome_leaves_the_next_attempts_slot,
            a_claim_by_id_holds_a_task_whose_key_is_full,
            a_deferred_rate_key_starts_nothing_before_its_time,
            an_outcome_wakes_a_held_task_not_yet_due,
            a_claim_by_id_books_each_task_the_rate_holds_a_start_of_its_own,
            a_rate_key_books_no_start_past_four_minutes,
            waiting_tasks_are_counted_by_reason
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
        .expect("a valid fixed instant: the cases never read the wall clock")
}

fn at(seconds: u64) -> Timestamp {
    t0().plus(Duration::from_secs(seconds))
}

fn new_task(task_type: &str) -> NewTask {
    NewTask::new(task_type, r#"{"n":1}"#)
}

async fn create_at<S: Store>(store: &S, new: NewTask, now: Timestamp) -> Task {
    match store
        .task_create(Task::from_new(new, now))
        .await
        .expect("create a task")
    {
        Created::New(task) => task,
        Created::Existing(task) => panic!("expected a new task, got existing {}", task.id),
    }
}

/// Creates `count` tasks from `new` at the same moment, each at its own instant.
async fn create_concurrently<S: Store>(
    store: &S,
    new: NewTask,
    count: u64,
) -> Vec<Result<Created, StoreError>> {
    let creators: Vec<_> = (0..count)
        .map(|i| {
            let store = store.clone();
            let new = new.clone();
            tokio::spawn(async move { store.task_create(Task::from_new(new, at(i))).await })
        })
        .collect();
    let mut results = Vec::new();
    for creator in creators {
        results.push(creator.await.expect("creator task"));
    }
    results
}

async fn claim<S: Store>(store: &S, now: Timestamp, limit: usize) -> Vec<Task> {
    store
        .task_claim(Claim::due(
            now,
            limit,
            &Leases::fixed(Duration::from_secs(60)),
        ))
        .await
        .expect("claim due tasks")
}

/// Claims at most one task at `at(now)` with a lease until `at(lease)`.
async fn claim_one_leased<S: Store>(store: &S, now: u64, lease: u64) -> Vec<Task> {
    store
        .task_claim(Claim::due(
            at(now),
            1,
            &Leases::fixed(Duration::from_secs(lease - now)),
        ))
        .await
        .expect("claim")
}

async fn fetch<S: Store>(store: &S, id: TaskId) -> Task {
    store.task_get(id).await.expect("get").expect("task exists")
}

fn ids(tasks: &[Task]) -> Vec<TaskId> {
    tasks.iter().map(|t| t.id).collect()
}
