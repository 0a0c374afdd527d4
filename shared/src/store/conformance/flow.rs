//! Flow control: paused types stay pending until resumed, a gate caps a type within a claim,
//! and the due and running tasks are counted per type.

use std::collections::BTreeMap;

use super::*;
use crate::store::ClaimGate;

async fn claim_through<S: Store>(
    store: &S,
    now: Timestamp,
    limit: usize,
    gate: &ClaimGate,
) -> Vec<Task> {
    store
        .task_claim(Claim::due(now, limit, &Leases::fixed(Duration::from_secs(60))).through(gate))
        .await
        .expect("claim through a gate")
}

async fn paused_gate<S: Store>(store: &S) -> ClaimGate {
    let paused = store
        .type_list_paused()
        .await
        .expect("read the paused types");
    ClaimGate::new(paused, BTreeMap::new())
}

/// GIVEN due tasks of two types, one paused WHEN claiming THEN only the other type's are
/// claimed, the paused ones stay pending, and once resumed they are claimed.
pub async fn a_paused_type_is_not_claimed_until_resumed<S: Store>(store: S) {
    let mail = create_at(&store, new_task("mail"), t0()).await;
    let report = create_at(&store, new_task("report"), at(1)).await;
    assert!(store.type_list_paused().await.expect("read").is_empty());

    let paused = store
        .type_set_paused("mail", true, at(2))
        .await
        .expect("pause");
    assert_eq!(paused.get("mail"), Some(&at(2)));
    let again = store
        .type_set_paused("mail", true, at(3))
        .await
        .expect("pause again");
    assert_eq!(
        again.get("mail"),
        Some(&at(2)),
        "a pause keeps its first instant"
    );

    let gate = paused_gate(&store).await;
    assert_eq!(
        ids(&claim_through(&store, at(5), 10, &gate).await),
        [report.id]
    );
    // Read again: a scan that remembers the paused task must still pass it.
    assert!(claim_through(&store, at(6), 10, &gate).await.is_empty());
    assert_eq!(fetch(&store, mail.id).await.status, TaskStatus::Pending);

    let resumed = store
        .type_set_paused("mail", false, at(7))
        .await
        .expect("resume");
    assert!(resumed.is_empty());
    let gate = paused_gate(&store).await;
    assert_eq!(
        ids(&claim_through(&store, at(8), 10, &gate).await),
        [mail.id]
    );
}

/// GIVEN five due tasks of a capped type and two of another WHEN one claim asks for ten with
/// room for two of the capped type THEN it takes two of it and both others; the rest stay due.
pub async fn a_gate_caps_a_type_within_one_claim<S: Store>(store: S) {
    let mut slow = Vec::new();
    for i in 0..5 {
        slow.push(create_at(&store, new_task("slow"), at(i)).await);
    }
    for i in 5..7 {
        create_at(&store, new_task("fast"), at(i)).await;
    }
    let gate = ClaimGate::new(PausedTypes::new(), BTreeMap::from([("slow".to_owned(), 2)]));
    let claimed = claim_through(&store, at(10), 10, &gate).await;
    let of = |name: &str| claimed.iter().filter(|t| t.task_type == name).count();
    assert_eq!((of("slow"), of("fast")), (2, 2));
    assert_eq!(ids(&claimed[..1]), [slow[0].id], "earliest first");
    let rest = claim(&store, at(11), 10).await;
    assert_eq!(rest.len(), 3, "the capped type's other tasks stayed due");
}

/// GIVEN due, later and running tasks of two types WHEN counting per type THEN each type has
/// its due and running tasks, and the later one is not due.
pub async fn type_counts_are_due_and_running_per_type<S: Store>(store: S) {
    create_at(&store, new_task("b"), t0()).await;
    create_at(&store, new_task("b"), at(1)).await;
    for i in 2..5 {
        create_at(&store, new_task("a"), at(i)).await;
    }
    let mut later = new_task("a");
    later.scheduled_at = Some(at(3600));
    create_at(&store, later, at(5)).await;
    let claimed = claim(&store, at(6), 1).await;
    assert_eq!(claimed[0].task_type, "b");

    let counts = store.type_count(at(10)).await.expect("count per type");
    assert!(counts.exact);
    let count = |name: &str| counts.by_type.get(name).copied().unwrap_or_default();
    assert_eq!((count("a").due, count("a").running), (3, 0));
    assert_eq!((count("b").due, count("b").running), (1, 1));
}

/// GIVEN tasks that succeeded and one cancelled a minute ago WHEN reading the throughput THEN
/// its buckets, oldest first up to now's, hold all three.
pub async fn throughput_counts_what_finished_lately<S: Store>(store: S) {
    for i in 0..2 {
        create_at(&store, new_task("t"), at(i)).await;
    }
    let pending = create_at(&store, new_task("t"), at(2)).await;
    for task in claim(&store, at(10), 2).await {
        store
            .task_settle(&task, Settlement::Succeeded, at(20))
            .await
            .expect("settle");
    }
    store.task_cancel(pending.id, at(30)).await.expect("cancel");
    store.queue_flush(at(30), true).await;

    let now = at(100);
    let throughput = store.queue_throughput(now).await.expect("throughput");
    let total: u64 = throughput.buckets.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 3, "{throughput:?}");
    let (last, _) = throughput.buckets.last().expect("buckets");
    assert!(*last <= now && now.since(*last) < throughput.bucket);
    assert!(throughput.buckets.windows(2).all(|w| w[0].0 < w[1].0));
}

/// GIVEN five due tasks of a type capped at two WHEN three claims follow each other at once
/// (a processor refilling as its slots free up) THEN they take two, two and one: a task the
/// gate turned away is not skipped by the next claim.
pub async fn claims_right_after_a_capped_one_take_the_rest<S: Store>(store: S) {
    for i in 0..5 {
        create_at(&store, new_task("slow"), at(i)).await;
    }
    let room = || ClaimGate::new(PausedTypes::new(), BTreeMap::from([("slow".to_owned(), 2)]));
    let mut taken = Vec::new();
    for want in [2, 2, 1] {
        let gate = room();
        // Long after they fell due: no look behind a cursor reaches back to them.
        let claimed = claim_through(&store, at(100), 10, &gate).await;
        assert_eq!(claimed.len(), want, "{taken:?}");
        // What the dispatcher reads as "held back": the type's room was used up (and, on a
        // scan that met more of its tasks, some were turned away).
        let held_back = gate.any_full() || gate.turned_away();
        assert_eq!(held_back, want == 2, "held back");
        taken.extend(ids(&claimed));
    }
    let mut unique = taken.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 5);
}

/// GIVEN due tasks of a paused type created before one of another type WHEN looking for the
/// tasks a message is due for, with room for one THEN the other type's task is found.
pub async fn deliverable_tasks_leave_out_paused_types<S: Store>(store: S) {
    for i in 0..3 {
        create_at(&store, new_task("mail"), at(i)).await;
    }
    let report = create_at(&store, new_task("report"), at(3)).await;
    let paused = PausedTypes::from([("mail".to_owned(), at(4))]);
    let gate = ClaimGate::new(paused, BTreeMap::new());
    let found = store
        .task_list_deliverable(Deliverable {
            horizon: at(10),
            now: at(10),
            limit: 1,
            gate: &gate,
        })
        .await
        .expect("deliverable");
    assert_eq!(ids(&found), [report.id]);
    let all = store
        .task_list_deliverable(Deliverable {
            horizon: at(10),
            now: at(10),
            limit: 10,
            gate: &OPEN_GATE,
        })
        .await
        .expect("deliverable");
    assert_eq!(all.len(), 4);
}
