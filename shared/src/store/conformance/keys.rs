//! Limits per key: a key at its concurrency limit holds its other due tasks (out of the claims'
//! path) until a slot frees, a rate key starts its burst and then one task per interval, and
//! concurrent claimers never pass a key's limit together. A store that keeps holds in memory
//! (DynamoDB: `key_holds_written` is false) leaves a held task as it was stored.

use std::sync::Arc;

use super::*;
use crate::store::{ClaimGate, KeyLimits, Transition};
use crate::task::Held;

fn gate(rules: &str) -> ClaimGate {
    ClaimGate::new(PausedTypes::new(), Default::default())
        .with_limits(Arc::new(KeyLimits::parse(rules).expect("valid rules")))
}

fn keyed(concurrency: Option<&str>, rate: Option<&str>) -> NewTask {
    let mut new = new_task("hook");
    new.concurrency_key = concurrency.map(str::to_owned);
    new.rate_key = rate.map(str::to_owned);
    new
}

async fn claim_with<S: Store>(
    store: &S,
    now: Timestamp,
    limit: usize,
    gate: &ClaimGate,
) -> Vec<Task> {
    store
        .task_claim(Claim::due(now, limit, &Leases::fixed(Duration::from_secs(60))).through(gate))
        .await
        .expect("claim through limits")
}

/// GIVEN four due tasks of a key limited to 2 at once, one of another key and one without
/// WHEN claiming THEN two of the key start with the others, the other two are held (pending,
/// due when the first lease ends, as `Transition::Hold` defines); a later claim takes none of
/// them; an outcome of the key wakes one held task, which the next claim takes.
pub async fn a_key_at_its_concurrency_limit_holds_the_rest<S: Store>(store: S) {
    let gate = gate(r#"[{"type": "hook", "concurrency": 2}]"#);
    let first = create_at(&store, keyed(Some("a"), None), t0()).await;
    let mut of_a = vec![first.id];
    for i in 1..4 {
        let task = create_at(&store, keyed(Some("a"), None), at(i)).await;
        of_a.push(task.id);
    }
    let other = create_at(&store, keyed(Some("b"), None), at(4)).await;
    let plain = create_at(&store, new_task("hook"), at(5)).await;

    let claimed = claim_with(&store, at(10), 10, &gate).await;
    assert_eq!(ids(&claimed), [of_a[0], of_a[1], other.id, plain.id]);
    let written = store.key_holds_written().await;
    for (i, id) in of_a[2..].iter().enumerate() {
        let held = fetch(&store, *id).await;
        let expected = if written {
            (TaskStatus::Pending, Some(Held::Concurrency), at(70), 0)
        } else {
            (TaskStatus::Pending, None, at(i as u64 + 2), 0)
        };
        assert_eq!(
            (held.status, held.held, held.scheduled_at, held.attempts),
            expected,
            "held until the first holder's lease ends"
        );
    }
    assert!(claim_with(&store, at(11), 10, &gate).await.is_empty());

    store
        .task_settle(&claimed[0], Settlement::Succeeded, at(12))
        .await
        .expect("settle a holder");
    if written {
        let woken = fetch(&store, of_a[2]).await;
        assert_eq!(
            (woken.status, woken.held, woken.scheduled_at),
            (TaskStatus::Pending, None, at(12)),
            "the first held task is due at the outcome"
        );
        assert_eq!(fetch(&store, of_a[3]).await.held, Some(Held::Concurrency));
    }
    assert_eq!(ids(&claim_with(&store, at(13), 10, &gate).await), [of_a[2]]);
    assert!(
        claim_with(&store, at(14), 10, &gate).await.is_empty(),
        "the key is full again"
    );
}

/// GIVEN a key limited to 1 at once whose holder's lease expires WHEN claiming after it THEN
/// exactly one task of the key runs again (the holder's retry or the held one), and the held
/// task is due by then with no outcome to wake it.
pub async fn a_held_task_is_due_when_its_holders_lease_ends<S: Store>(store: S) {
    let gate = gate(r#"[{"keyPrefix": "a", "concurrency": 1}]"#);
    let holder = create_at(&store, keyed(Some("a1"), None), t0()).await;
    let waiter = create_at(&store, keyed(Some("a1"), None), at(1)).await;
    assert_eq!(
        ids(&claim_with(&store, at(2), 10, &gate).await),
        [holder.id]
    );
    let written = store.key_holds_written().await;
    let until = if written { at(62) } else { at(1) };
    assert_eq!(fetch(&store, waiter.id).await.scheduled_at, until);
    let again = claim_with(&store, at(63), 10, &gate).await;
    assert_eq!(again.len(), 1, "one slot: {:?}", ids(&again));
    let other = if again[0].id == holder.id {
        waiter.id
    } else {
        holder.id
    };
    let left = fetch(&store, other).await;
    if written {
        assert_eq!(
            (left.status, left.held),
            (TaskStatus::Pending, Some(Held::Concurrency))
        );
    }
    assert!(
        claim_with(&store, at(64), 10, &gate).await.is_empty(),
        "the expired lease's slot went to one task"
    );
}

/// GIVEN three due tasks of a rate key allowed 2 starts per 10 s (burst 1) WHEN claiming over
/// a manual clock THEN one starts, the others are held 5 s apart and each starts at its time,
/// not before.
pub async fn a_rate_key_starts_one_task_per_interval<S: Store>(store: S) {
    let gate = gate(r#"[{"type": "hook", "rate": "2/10s"}]"#);
    let first = create_at(&store, keyed(None, Some("r")), t0()).await;
    let second = create_at(&store, keyed(None, Some("r")), at(1)).await;
    let third = create_at(&store, keyed(None, Some("r")), at(2)).await;
    assert_eq!(
        ids(&claim_with(&store, at(10), 10, &gate).await),
        [first.id]
    );
    let (held2, held3) = (
        fetch(&store, second.id).await,
        fetch(&store, third.id).await,
    );
    if store.key_holds_written().await {
        let stored = (
            held2.held,
            held2.scheduled_at,
            held3.held,
            held3.scheduled_at,
        );
        assert_eq!(stored, (Some(Held::Rate), at(15), Some(Held::Rate), at(20)));
        let transition = Transition::Hold {
            due_by: at(10),
            now: at(10),
            until: at(15),
            held: Held::Rate,
        };
        let expected = transition.apply(&second).expect("applies to the due task");
        assert_eq!(
            held2, expected,
            "the store holds what the transition defines"
        );
    } else {
        assert_eq!(
            (held2, held3),
            (second.clone(), third.clone()),
            "held in memory only"
        );
    }
    assert!(claim_with(&store, at(14), 10, &gate).await.is_empty());
    assert_eq!(
        ids(&claim_with(&store, at(15), 10, &gate).await),
        [second.id]
    );
    assert!(claim_with(&store, at(19), 10, &gate).await.is_empty());
    assert_eq!(
        ids(&claim_with(&store, at(20), 10, &gate).await),
        [third.id]
    );
}

/// GIVEN 20 due tasks of a key limited to 3 at once WHEN four claimers claim at once THEN 3
/// start in all, whichever claimer took them.
pub async fn concurrent_claimers_never_pass_a_keys_limit<S: Store>(store: S) {
    create_at(&store, keyed(Some("k"), None), t0()).await;
    for i in 1..20 {
        create_at(&store, keyed(Some("k"), None), at(i)).await;
    }
    let gate = gate(r#"[{"type": "hook", "concurrency": 3}]"#);
    let claimers: Vec<_> = (0..4)
        .map(|_| {
            let (store, gate) = (store.clone(), gate.clone());
            tokio::spawn(async move { claim_with(&store, at(30), 10, &gate).await.len() })
        })
        .collect();
    let mut started = 0;
    for claimer in claimers {
        started += claimer.await.expect("claimer");
    }
    assert_eq!(started, 3, "the key's limit holds across claimers");
    // Whatever a claimer left for another is held or claimed by now.
    assert!(claim_with(&store, at(31), 10, &gate).await.is_empty());
}

/// GIVEN a key limited to 1 at once whose task ran past its lease and was claimed again WHEN
/// the first attempt's outcome comes late THEN it is refused and the second attempt keeps the
/// key's slot: another task of the key is held until the second attempt ends.
pub async fn a_late_outcome_leaves_the_next_attempts_slot<S: Store>(store: S) {
    let gate = gate(r#"[{"type": "hook", "concurrency": 1}]"#);
    let task = create_at(&store, keyed(Some("k"), None), t0()).await;
    let first = claim_with(&store, at(10), 10, &gate).await;
    assert_eq!(ids(&first), [task.id]);
    let second = claim_with(&store, at(71), 10, &gate).await;
    assert_eq!(ids(&second), [task.id], "claimed again after its lease");
    assert!(
        store
            .task_settle(&first[0], Settlement::Succeeded, at(72))
            .await
            .is_err(),
        "the first attempt's lease was lost"
    );
    let other = create_at(&store, keyed(Some("k"), None), at(73)).await;
    assert!(
        claim_with(&store, at(74), 10, &gate).await.is_empty(),
        "the second attempt holds the slot"
    );
    store
        .task_settle(&second[0], Settlement::Succeeded, at(75))
        .await
        .expect("the second attempt's outcome");
    assert_eq!(
        ids(&claim_with(&store, at(76), 10, &gate).await),
        [other.id]
    );
}

/// GIVEN a task of a full key WHEN a message's claim by id finds it due THEN it is held, not
/// started, and answered as not due.
pub async fn a_claim_by_id_holds_a_task_whose_key_is_full<S: Store>(store: S) {
    let gate = gate(r#"[{"type": "hook", "concurrency": 1}]"#);
    let holder = create_at(&store, keyed(Some("k"), None), t0()).await;
    let waiter = create_at(&store, keyed(Some("k"), None), at(1)).await;
    let leases = Leases::fixed(Duration::from_secs(60));
    let by_id = |id| ClaimById::due(id, at(2), &leases).through(&gate);
    let first = store
        .task_claim_by_id(by_id(holder.id))
        .await
        .expect("claim");
    assert!(matches!(first, ClaimedById::Claimed(_)), "{first:?}");
    match store
        .task_claim_by_id(by_id(waiter.id))
        .await
        .expect("claim")
    {
        ClaimedById::NotDue(task) => {
            assert_eq!(
                (task.held, task.scheduled_at),
                (Some(Held::Concurrency), at(62))
            );
        }
        other => panic!("expected the task held, got {other:?}"),
    }
}

/// GIVEN a rate key that allows one start a second WHEN messages' claims by id find three of
/// its tasks due at once THEN the first starts and the others are held each until a start of
/// its own, booked one interval apart; a message that came for a booked start and finds the
/// key's next start taken waits for the next one without booking another, and the next task
/// held books after every start booked before it.
pub async fn a_claim_by_id_books_each_task_the_rate_holds_a_start_of_its_own<S: Store>(store: S) {
    let gate = gate(r#"[{"type": "hook", "rate": "1/1s"}]"#);
    let leases = Leases::fixed(Duration::from_secs(60));
    let mut tasks = Vec::new();
    for i in 0..5 {
        tasks.push(create_at(&store, keyed(None, Some("r")), at(i)).await);
    }
    let by_id = |id, now| ClaimById::due(id, now, &leases).through(&gate);
    let held_until = |found: ClaimedById| match found {
        ClaimedById::NotDue(task) => {
            assert_eq!(task.held, Some(Held::Rate), "{task:?}");
            task.scheduled_at
        }
        other => panic!("expected the task held for its rate, got {other:?}"),
    };
    let first = store
        .task_claim_by_id(by_id(tasks[0].id, at(10)))
        .await
        .expect("claim");
    assert!(matches!(first, ClaimedById::Claimed(_)), "{first:?}");
    let mut booked = Vec::new();
    for task in &tasks[1..3] {
        let found = store
            .task_claim_by_id(by_id(task.id, at(10)))
            .await
            .expect("claim");
        booked.push(held_until(found));
    }
    assert_eq!(
        booked,
        [at(11), at(12)],
        "one start each, an interval apart"
    );
    // The second's message comes at its start, but a task whose message came at the same
    // moment took it (the rate allowed it a start then): the second waits for the key's next
    // start, booking none.
    let stolen = store
        .task_claim_by_id(by_id(tasks[3].id, at(11)))
        .await
        .expect("claim");
    assert!(matches!(stolen, ClaimedById::Claimed(_)), "{stolen:?}");
    let second = store
        .task_claim_by_id(by_id(tasks[1].id, at(11)).booked(true))
        .await
        .expect("claim");
    assert_eq!(held_until(second), at(12), "the key's next start");
    let fifth = store
        .task_claim_by_id(by_id(tasks[4].id, at(11)))
        .await
        .expect("claim");
    assert_eq!(held_until(fifth), at(13), "after every start booked");
}

/// GIVEN a rate key that allows one start every two minutes WHEN claims by id hold four of its
/// tasks at once THEN starts are booked up to four minutes ahead, and the tasks past them are
/// held until then, unbooked.
pub async fn a_rate_key_books_no_start_past_four_minutes<S: Store>(store: S) {
    let gate = gate(r#"[{"type": "hook", "rate": "1/2m"}]"#);
    let leases = Leases::fixed(Duration::from_secs(60));
    let mut held = Vec::new();
    for i in 0..5 {
        let task = create_at(&store, keyed(None, Some("r")), at(i)).await;
        let claim = ClaimById::due(task.id, at(10), &leases).through(&gate);
        match store.task_claim_by_id(claim).await.expect("claim") {
            ClaimedById::Claimed(_) => assert_eq!(i, 0, "only the first starts"),
            ClaimedById::NotDue(task) => held.push(task.scheduled_at),
            other => panic!("expected a start or a hold, got {other:?}"),
        }
    }
    let last = at(10).plus(crate::store::BOOK_AHEAD);
    assert_eq!(held, [at(130), at(250), last, last]);
}

/// GIVEN a rate key deferred to a later instant (its receiver asked for a pause) WHEN a task of
/// it is due before then THEN it is held until then and starts at it; a deferral to an earlier
/// instant than the key's next start changes nothing.
pub async fn a_deferred_rate_key_starts_nothing_before_its_time<S: Store>(store: S) {
    let gate = gate(r#"[{"type": "hook", "rate": "1/1s"}]"#);
    let task = create_at(&store, keyed(None, Some("r")), t0()).await;
    store.key_defer("r", at(30)).await.expect("defer");
    store
        .key_defer("r", at(20))
        .await
        .expect("an earlier deferral");
    assert!(claim_with(&store, at(10), 10, &gate).await.is_empty());
    let held = fetch(&store, task.id).await;
    if store.key_holds_written().await {
        assert_eq!((held.held, held.scheduled_at), (Some(Held::Rate), at(30)));
    } else {
        assert_eq!(held, task, "held in memory only");
    }
    assert_eq!(ids(&claim_with(&store, at(30), 10, &gate).await), [task.id]);
}

/// GIVEN a key limited to 1 at once, its holder running and two tasks held (the second a lease
/// later) WHEN the holder's outcome comes after the first hold ended THEN the outcome wakes the
/// second (the first is due already), and a cancel or retry clears a task's hold.
pub async fn an_outcome_wakes_a_held_task_not_yet_due<S: Store>(store: S) {
    let gate = gate(r#"[{"type": "hook", "concurrency": 1}]"#);
    let holder = create_at(&store, keyed(Some("k"), None), t0()).await;
    let first = create_at(&store, keyed(Some("k"), None), at(1)).await;
    let second = create_at(&store, keyed(Some("k"), None), at(2)).await;
    let claimed = claim_with(&store, at(10), 10, &gate).await;
    assert_eq!(ids(&claimed), [holder.id]);
    if !store.key_holds_written().await {
        // Held in memory: the outcome wakes the earliest task still held, here the first.
        store
            .task_settle(&claimed[0], Settlement::Succeeded, at(75))
            .await
            .expect("the holder's outcome");
        let next = claim_with(&store, at(76), 10, &gate).await;
        assert_eq!(ids(&next), [first.id], "the first's hold ended");
        store
            .task_settle(&next[0], Settlement::Succeeded, at(77))
            .await
            .expect("the first's outcome");
        assert_eq!(
            ids(&claim_with(&store, at(78), 10, &gate).await),
            [second.id],
            "woken by the outcome, before its hold's end at 130"
        );
        return;
    }
    assert_eq!(fetch(&store, first.id).await.scheduled_at, at(70));
    assert_eq!(
        fetch(&store, second.id).await.scheduled_at,
        at(130),
        "one lease after the first"
    );
    store
        .task_settle(&claimed[0], Settlement::Succeeded, at(75))
        .await
        .expect("the holder's outcome");
    let woken = fetch(&store, second.id).await;
    assert_eq!((woken.held, woken.scheduled_at), (None, at(75)));
    let cancelled = store.task_cancel(first.id, at(76)).await.expect("cancel");
    assert_eq!(cancelled.held, None, "a cancel clears the hold");
    let retried = store.task_retry(first.id, at(77)).await.expect("retry");
    assert_eq!((retried.held, retried.status), (None, TaskStatus::Pending));
}

/// GIVEN unfinished tasks waiting for every reason a store knows WHEN counting them THEN each
/// reason has its tasks and the due ones are counted per type; a cap below their number marks
/// the count inexact. (DynamoDB does not count them.)
pub async fn waiting_tasks_are_counted_by_reason<S: Store>(store: S) {
    if store
        .task_count_waiting(at(0), 100)
        .await
        .expect("count")
        .is_none()
    {
        return;
    }
    let mut later = new_task("mail");
    later.scheduled_at = Some(at(1_000));
    create_at(&store, later, t0()).await;
    let retried = create_at(&store, new_task("retried"), t0()).await;
    let lapsed = create_at(&store, new_task("lapsed"), at(1)).await;
    let claimed = store
        .task_claim(Claim::due(
            at(2),
            2,
            &Leases::fixed(Duration::from_secs(20)),
        ))
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), [retried.id, lapsed.id]);
    let retry = Settlement::Retry {
        error: "later".into(),
        retry_at: at(500),
    };
    store
        .task_settle(&claimed[0], retry, at(3))
        .await
        .expect("retry");
    create_at(&store, new_task("mail"), at(4)).await;
    create_at(&store, new_task("mail"), at(5)).await;
    create_at(&store, new_task("report"), at(6)).await;
    for (i, keys) in [
        (Some("k"), None),
        (Some("k"), None),
        (None, Some("r")),
        (None, Some("r")),
    ]
    .into_iter()
    .enumerate()
    {
        create_at(&store, keyed(keys.0, keys.1), at(7 + i as u64)).await;
    }
    // Starts one task of each key and holds the other; the plain due ones stay due.
    let paused = PausedTypes::from([("mail".to_owned(), at(0)), ("report".to_owned(), at(0))]);
    let rules = r#"[{"keyPrefix": "k", "concurrency": 1}, {"keyPrefix": "r", "rate": "1/1h"}]"#;
    let keys_only = ClaimGate::new(paused, Default::default())
        .with_limits(Arc::new(KeyLimits::parse(rules).expect("valid rules")));
    assert_eq!(claim_with(&store, at(11), 10, &keys_only).await.len(), 2);

    let counts = store
        .task_count_waiting(at(50), 100)
        .await
        .expect("count")
        .expect("counted");
    let expected = crate::store::WaitingCounts {
        scheduled: 1,
        backing_off: 1,
        key_concurrency: 1,
        key_rate: 1,
        circuit_open: 0,
        due_by_type: [("mail".to_owned(), 2), ("report".to_owned(), 1)].into(),
        lease_expired: 1,
        exact: true,
    };
    assert_eq!(counts, expected);
    let capped = store
        .task_count_waiting(at(50), 5)
        .await
        .expect("count")
        .expect("counted");
    assert_eq!((capped.total(), capped.exact), (5, false));
}
