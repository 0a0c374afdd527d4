//! Every transition stores exactly what [`Transition::apply`] defines: the stored task after a
//! backend's write equals the transition applied to the task before, field by field.

use super::*;
use crate::store::Transition;

/// The names of the fields in which `stored` and `defined` differ.
fn differing_fields(stored: &Task, defined: &Task) -> Vec<String> {
    let to_map = |task: &Task| match serde_json::to_value(task) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (stored_map, defined_map) = (to_map(stored), to_map(defined));
    let mut names: Vec<String> = stored_map
        .keys()
        .chain(defined_map.keys())
        .filter(|name| stored_map.get(*name) != defined_map.get(*name))
        .cloned()
        .collect();
    // Not in the JSON form (the API never shows it), but stored all the same.
    if stored.lease_token != defined.lease_token {
        names.push("leaseToken".into());
    }
    names.sort();
    names.dedup();
    names
}

/// Asserts that `returned` (what the store call answered) and the task now stored are both
/// `defined`, naming every field that differs.
async fn assert_stores<S: Store>(store: &S, returned: &Task, defined: &Task) {
    let differ = differing_fields(returned, defined);
    assert!(
        differ.is_empty(),
        "the answer differs in {differ:?}: {returned:?} vs {defined:?}"
    );
    let stored = fetch(store, defined.id).await;
    let differ = differing_fields(&stored, defined);
    assert!(
        differ.is_empty(),
        "the stored task differs in {differ:?}: {stored:?} vs {defined:?}"
    );
}

/// GIVEN a due task WHEN it is claimed THEN the store holds `Transition::Claim` of it.
pub async fn a_claim_stores_what_the_transition_defines<S: Store>(store: S) {
    let created = create_at(&store, new_task("t"), t0()).await;
    let before = fetch(&store, created.id).await;
    let claimed = claim_one_leased(&store, 1, 61).await.remove(0);
    let claim = Transition::Claim {
        due_by: at(1),
        now: at(1),
        lease_until: at(61),
        token: claimed.lease_token.clone().expect("a claim has a token"),
    };
    let defined = claim.apply(&before).expect("the task is due");
    assert_stores(&store, &claimed, &defined).await;
}

/// GIVEN a running attempt WHEN each kind of outcome is recorded THEN the store holds
/// `Transition::Settle` of it.
pub async fn every_settlement_stores_what_the_transition_defines<S: Store>(store: S) {
    let outcomes = [
        Settlement::Succeeded,
        Settlement::Retry {
            error: "HTTP 503".into(),
            retry_at: at(90),
        },
        Settlement::Failed {
            error: "HTTP 410".into(),
        },
        Settlement::Released,
        Settlement::Held { until: at(120) },
    ];
    for outcome in outcomes {
        let created = create_at(&store, new_task("t"), t0()).await;
        let claimed = claim_one_leased(&store, 1, 61).await.remove(0);
        assert_eq!(claimed.id, created.id);
        let before = fetch(&store, created.id).await;
        let settle = Transition::settle(&claimed, outcome.clone(), at(5)).expect("claimed");
        let defined = settle.apply(&before).expect("the claimant settles");
        let returned = store
            .task_settle(&claimed, outcome, at(5))
            .await
            .expect("settle");
        assert_stores(&store, &returned, &defined).await;
        // Out of the way of the next round's claim.
        if returned.status == TaskStatus::Pending {
            store.task_cancel(returned.id, at(6)).await.expect("cancel");
        }
    }
}

/// GIVEN a final attempt whose lease expired WHEN a claim runs THEN the store holds
/// `Transition::Expire` of it.
pub async fn an_expiry_stores_what_the_transition_defines<S: Store>(store: S) {
    let mut new = new_task("t");
    new.max_attempts = Some(1);
    let created = create_at(&store, new, t0()).await;
    let claimed = claim_one_leased(&store, 1, 10).await.remove(0);
    let before = fetch(&store, created.id).await;
    assert!(claim_one_leased(&store, 11, 20).await.is_empty());
    let stored = fetch(&store, created.id).await;
    assert_ne!(
        stored.lease_token, claimed.lease_token,
        "the expiry has a token of its own"
    );
    let expire = Transition::Expire {
        due_by: at(11),
        now: at(11),
        token: stored.lease_token.clone().expect("the expiry's token"),
    };
    let defined = expire.apply(&before).expect("the lease expired");
    assert_stores(&store, &stored, &defined).await;
}

/// GIVEN a pending task WHEN it is cancelled THEN the store holds `Transition::Cancel` of it.
pub async fn a_cancel_stores_what_the_transition_defines<S: Store>(store: S) {
    let mut new = new_task("t");
    new.scheduled_at = Some(at(3600));
    let created = create_at(&store, new, t0()).await;
    let before = fetch(&store, created.id).await;
    let defined = Transition::Cancel { now: at(5) }
        .apply(&before)
        .expect("pending");
    let returned = store.task_cancel(created.id, at(5)).await.expect("cancel");
    assert_stores(&store, &returned, &defined).await;
}

/// GIVEN a failed task and a cancelled task with a reference WHEN each is retried THEN the
/// store holds `Transition::Retry` of it.
pub async fn a_retry_stores_what_the_transition_defines<S: Store>(store: S) {
    let mut failing = new_task("t");
    failing.max_attempts = Some(1);
    let failing = create_at(&store, failing, t0()).await;
    let running = claim_one_leased(&store, 1, 61).await.remove(0);
    let failure = Settlement::Failed {
        error: "boom".into(),
    };
    store
        .task_settle(&running, failure, at(2))
        .await
        .expect("settle");
    let mut referenced = new_task("t");
    referenced.reference_uid = Some("booking-transition".into());
    let referenced = create_at(&store, referenced, t0()).await;
    store
        .task_cancel(referenced.id, at(3))
        .await
        .expect("cancel");

    for id in [failing.id, referenced.id] {
        let before = fetch(&store, id).await;
        let defined = Transition::Retry { now: at(10) }
            .apply(&before)
            .expect("finished");
        let returned = store.task_retry(id, at(10)).await.expect("retry");
        assert_stores(&store, &returned, &defined).await;
    }
}
