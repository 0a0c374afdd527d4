//! Claims and outcomes: what is due, leases, and every settlement.

use super::*;

/// GIVEN a task due now and one due later WHEN claiming now THEN only the first is claimed.
pub async fn only_due_tasks_are_claimed<S: Store>(store: S) {
    let now_task = create_at(&store, new_task("t"), t0()).await;
    let mut later = new_task("t");
    later.scheduled_at = Some(at(3600));
    let later_task = create_at(&store, later, t0()).await;

    let claimed = claim(&store, at(1), 10).await;
    assert_eq!(ids(&claimed), vec![now_task.id]);
    store
        .task_settle(&claimed[0], Settlement::Succeeded, at(2))
        .await
        .expect("settle");
    assert!(claim(&store, at(3599), 10).await.is_empty());
    assert_eq!(ids(&claim(&store, at(3600), 10).await), vec![later_task.id]);
}

/// GIVEN tasks scheduled in reverse creation order WHEN claiming with a limit THEN the earliest
/// scheduled come first and no more than the limit.
pub async fn claims_are_oldest_first_and_limited<S: Store>(store: S) {
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

/// GIVEN due tasks of two types WHEN claimed together THEN each lease runs for its own type's
/// duration, so a dead processor's short tasks are due again before its long ones.
pub async fn claim_leases_each_task_for_its_type<S: Store>(store: S) {
    let short = create_at(&store, new_task("short"), t0()).await;
    let long = create_at(&store, new_task("long"), t0()).await;
    let leases = Leases::by_type(
        Duration::from_secs(60),
        std::collections::HashMap::from([("long".to_owned(), Duration::from_secs(600))]),
    );
    let claimed = store
        .task_claim(Claim::due(at(1), 10, &leases))
        .await
        .expect("claim");
    let lease_of = |id| {
        claimed
            .iter()
            .find(|task| task.id == id)
            .and_then(|task| task.lease_expires_at)
    };
    assert_eq!(lease_of(short.id), Some(at(61)));
    assert_eq!(lease_of(long.id), Some(at(601)));
    assert_eq!(fetch(&store, long.id).await.lease_expires_at, Some(at(601)));
    let ids = |tasks: Vec<Task>| tasks.into_iter().map(|task| task.id).collect::<Vec<_>>();
    assert_eq!(
        ids(claim(&store, at(61), 10).await),
        [short.id],
        "the short one is due again"
    );
    assert!(
        ids(claim(&store, at(601), 10).await).contains(&long.id),
        "then the long one"
    );
}

/// GIVEN a due task WHEN claimed THEN it is running, its attempt counted, its lease set.
pub async fn claim_starts_an_attempt_under_lease<S: Store>(store: S) {
    let task = create_at(&store, new_task("t"), t0()).await;
    let lease = at(61);
    let claimed = store
        .task_claim(Claim::due(
            at(1),
            10,
            &Leases::fixed(Duration::from_secs(60)),
        ))
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
pub async fn a_claimed_task_is_not_claimed_again_while_leased<S: Store>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    assert_eq!(claim(&store, at(1), 10).await.len(), 1);
    assert!(claim(&store, at(2), 10).await.is_empty());
    assert!(claim(&store, at(60), 10).await.is_empty());
}

/// GIVEN 60 due tasks WHEN 4 claimers race THEN every task is claimed exactly once.
pub async fn concurrent_claimers_never_share_a_task<S: Store>(store: S) {
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
pub async fn success_is_recorded<S: Store>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    let running = claim(&store, at(1), 1).await.remove(0);
    let done = store
        .task_settle(&running, Settlement::Succeeded, at(2))
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
pub async fn retry_makes_the_task_due_again<S: Store>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    let running = claim(&store, at(1), 1).await.remove(0);
    let retry = Settlement::Retry {
        error: "HTTP 503".into(),
        retry_at: at(30),
    };
    let pending = store
        .task_settle(&running, retry, at(2))
        .await
        .expect("settle");
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
pub async fn final_failure_is_kept_for_inspection<S: Store>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    let running = claim(&store, at(1), 1).await.remove(0);
    let failed = store
        .task_settle(
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
pub async fn a_lost_lease_cannot_overwrite_the_new_attempt<S: Store>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    let first = claim_one_leased(&store, 1, 10).await.remove(0);
    let second = claim_one_leased(&store, 11, 100).await.remove(0);
    assert_eq!(second.attempts, 2);
    let late = store
        .task_settle(&first, Settlement::Succeeded, at(12))
        .await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost(id)) if id == first.id),
        "{late:?}"
    );
    let current = fetch(&store, first.id).await;
    assert_eq!(current.status, TaskStatus::Running);
    assert_eq!(current.attempts, 2);
    store
        .task_settle(&second, Settlement::Succeeded, at(13))
        .await
        .expect("the new holder settles");
}

/// GIVEN a running task whose processor died WHEN its lease expires THEN it is claimable again.
pub async fn an_expired_lease_makes_the_task_due_again<S: Store>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    claim_one_leased(&store, 1, 10).await;
    assert!(claim_one_leased(&store, 9, 20).await.is_empty());
    let again = claim_one_leased(&store, 10, 20).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
}

/// GIVEN the final attempt's lease expired WHEN claiming THEN the task fails instead of running.
pub async fn an_expired_final_attempt_fails_the_task<S: Store>(store: S) {
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
pub async fn release_gives_the_attempt_back<S: Store>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    let running = claim(&store, at(1), 1).await.remove(0);
    let released = store
        .task_settle(&running, Settlement::Released, at(2))
        .await
        .expect("release");
    assert_eq!(released.status, TaskStatus::Pending);
    assert_eq!(released.attempts, 0);
    assert_eq!(claim(&store, at(3), 1).await.len(), 1);
}

/// GIVEN an outcome that was written WHEN the processor writes it again (its answer was lost)
/// THEN the same outcome stands and is answered; a different one is a lost lease.
pub async fn a_repeated_outcome_is_recognised_as_written<S: Store>(store: S) {
    create_at(&store, new_task("t"), t0()).await;
    let running = claim(&store, at(1), 1).await.remove(0);
    let done = store
        .task_settle(&running, Settlement::Succeeded, at(2))
        .await
        .expect("settle");
    let again = store
        .task_settle(&running, Settlement::Succeeded, at(2))
        .await
        .expect("the same outcome again");
    assert_eq!(again, done);
    let other = store
        .task_settle(
            &running,
            Settlement::Failed {
                error: "late".into(),
            },
            at(3),
        )
        .await;
    assert!(matches!(other, Err(StoreError::LeaseLost(_))), "{other:?}");
    assert_eq!(fetch(&store, running.id).await, done);
}

/// GIVEN a final attempt whose lease expired, failed by a later claim WHEN its processor
/// reports late, even with the very outcome the expiry wrote THEN it is told its lease was
/// lost, and the expiry's failure stands: each outcome is reported by the writer that wrote it.
pub async fn a_late_outcome_after_an_expiry_is_a_lost_lease<S: Store>(store: S) {
    let mut new = new_task("t");
    new.max_attempts = Some(1);
    let task = create_at(&store, new, t0()).await;
    let claimed = claim_one_leased(&store, 1, 10).await.remove(0);
    assert!(claim_one_leased(&store, 11, 20).await.is_empty());
    let expired = fetch(&store, task.id).await;
    assert_eq!(expired.status, TaskStatus::Failed);
    let late_outcomes = [
        (Settlement::Succeeded, at(12)),
        (
            Settlement::Failed {
                error: crate::store::LEASE_EXPIRED_ERROR.into(),
            },
            at(11),
        ),
        (Settlement::Released, at(12)),
    ];
    for (outcome, now) in late_outcomes {
        let late = store.task_settle(&claimed, outcome, now).await;
        assert!(matches!(late, Err(StoreError::LeaseLost(_))), "{late:?}");
    }
    assert_eq!(fetch(&store, task.id).await, expired);
}
