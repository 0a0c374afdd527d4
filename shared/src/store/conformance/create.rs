//! Creating and reading tasks: round trips, references, idempotency keys.

use super::*;

/// GIVEN a created task WHEN it is read back THEN every field is as created.
pub async fn create_then_get_round_trips<S: Store>(store: S) {
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
    let created = store
        .task_create(created)
        .await
        .expect("create")
        .into_task();
    assert_eq!(created.max_attempts, 7);
    assert_eq!(created.retry_policy, policy);
    assert_eq!(created.status, TaskStatus::Pending);
    assert_eq!(created.attempts, 0);
    assert_eq!(fetch(&store, created.id).await, created);
}

/// GIVEN an empty store WHEN an unknown id is read THEN there is no task.
pub async fn get_of_unknown_id_is_none<S: Store>(store: S) {
    let id = TaskId::new(t0().0);
    assert!(store.task_get(id).await.expect("get").is_none());
}

/// GIVEN an active task with a reference WHEN another with the same reference and type is
/// created THEN it is refused naming the first; another type, or a finished first, is fine.
pub async fn duplicate_reference_is_refused_while_active<S: Store>(store: S) {
    let mut new = new_task("email");
    new.reference_uid = Some("booking-9".into());
    let first = create_at(&store, new.clone(), t0()).await;

    let again = store.task_create(Task::from_new(new.clone(), at(1))).await;
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
        store.task_create(Task::from_new(new.clone(), at(3))).await,
        Err(StoreError::Duplicate { .. })
    ));
    store
        .task_settle(&running, Settlement::Succeeded, at(4))
        .await
        .expect("settle");
    let second = create_at(&store, new.clone(), at(5)).await;
    assert_ne!(second.id, first.id);

    // A cancelled holder frees the reference too.
    store.task_cancel(second.id, at(6)).await.expect("cancel");
    create_at(&store, new, at(7)).await;
}

/// GIVEN 8 creates with one reference at the same moment THEN exactly one is stored.
pub async fn concurrent_duplicate_creates_admit_one<S: Store>(store: S) {
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

/// GIVEN a task created with an idempotency key WHEN the same key and type come again (even
/// after it finished) THEN the first task is returned; another type or key makes a new task;
/// once purged, the key is free.
pub async fn a_repeated_idempotency_key_returns_the_first_task<S: Store>(store: S) {
    let keyed = |task_type: &str, key: &str| {
        let mut new = new_task(task_type);
        new.idempotency_key = Some(key.into());
        new
    };
    let first = create_at(&store, keyed("email", "order-1"), t0()).await;
    let again = store
        .task_create(Task::from_new(keyed("email", "order-1"), at(1)))
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

    store.task_cancel(first.id, at(2)).await.expect("cancel");
    let after_finish = store
        .task_create(Task::from_new(keyed("email", "order-1"), at(3)))
        .await
        .expect("create");
    assert!(
        matches!(after_finish, Created::Existing(ref t) if t.id == first.id && t.status == TaskStatus::Cancelled)
    );

    store
        .task_purge_finished(at(2), &|_| ())
        .await
        .expect("purge");
    let fresh = create_at(&store, keyed("email", "order-1"), at(4)).await;
    assert_ne!(fresh.id, first.id);
}

/// GIVEN 8 creates with one idempotency key at the same moment THEN one task is made and every
/// caller gets it.
pub async fn concurrent_creates_with_one_idempotency_key_make_one_task<S: Store>(store: S) {
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
