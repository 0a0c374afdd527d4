//! Guard items: one per `(referenceUid, type)` held by an active task, and one per
//! `(type, idempotencyKey)` naming the task it made. DynamoDB has no unique secondary index,
//! so these items are what makes a second active holder, or a second task for one key,
//! impossible.

use std::time::Duration;

use super::expr;
use super::item::{GuardItem, from_item, guard_key, idempotency_key_of};
use super::table::{Table, Write};
use crate::clock::Timestamp;
use crate::store::{Created, StoreError};
use crate::task::{Task, TaskId};

/// How long a reference guard whose task is not written yet counts as a create in flight.
const GUARD_GRACE: Duration = Duration::from_secs(30);
/// How often a create retries taking a guard that others keep changing.
const GUARD_ATTEMPTS: usize = 5;
/// How often, and how far apart, a repeated create looks for the task of a create in flight.
const IN_FLIGHT_POLLS: usize = 25;
const IN_FLIGHT_WAIT: Duration = Duration::from_millis(200);

/// Who holds a guard another task wants.
struct Holder {
    id: TaskId,
    /// The holder's task, if it is written yet.
    task: Option<Task>,
    /// The guard was written less than [`GUARD_GRACE`] ago.
    young: bool,
}

/// Why a guard stopped a create.
enum Stop {
    /// An active task holds the reference (or its create is in flight).
    Duplicate(TaskId),
    /// The idempotency key already made this task.
    Existing(Box<Task>),
    /// The holder's create has not written its task yet.
    InFlight,
}

/// Takes the guard item `key` for `task`, written at `now`. When another task holds it,
/// `decide` sees the holder and either stops the create or lets this task take the guard
/// over. A takeover is conditioned on the holder *and* the version it read, so any write in
/// between (a retry re-taking the guard) wins.
async fn take(
    table: &Table,
    key: &str,
    task: &Task,
    now: Timestamp,
    decide: impl Fn(&Holder) -> Option<Stop>,
) -> Result<Option<Stop>, StoreError> {
    let mut condition = expr::new_item();
    for _ in 0..GUARD_ATTEMPTS {
        let guard = GuardItem::new(key, task.id, now);
        let old = match table.put(guard.to_item()?, condition).await? {
            Write::Done(()) => return Ok(None),
            Write::ConditionFailed(old) => old,
        };
        // The guard exists, or changed since it was read: look at its holder.
        let Some(old) = old else {
            condition = expr::new_item();
            continue;
        };
        let old = GuardItem::from_item(old)?;
        if old.task_id == task.id.to_string() {
            // An SDK retry of a put whose first try landed: the guard is ours.
            return Ok(None);
        }
        if let Ok(id) = old.task_id.parse::<TaskId>() {
            let holder = Holder {
                id,
                task: table
                    .get(&id.to_string())
                    .await?
                    .map(from_item)
                    .transpose()?,
                young: old.created_at.is_some_and(|at| at.plus(GUARD_GRACE) > now),
            };
            if let Some(stop) = decide(&holder) {
                return Ok(Some(stop));
            }
        }
        condition = expr::guard_as_read(&old.task_id, old.version.as_deref());
    }
    Err(StoreError::unavailable(format!(
        "{key:?} is contended; try again"
    )))
}

/// Takes the reference guard of `task`, if it has a reference: refused with
/// [`StoreError::Duplicate`] while another task holding it is pending or running (or was
/// created moments ago and is not written yet); taken over from a finished holder.
pub async fn take_reference(table: &Table, task: &Task, now: Timestamp) -> Result<(), StoreError> {
    let Some(reference) = &task.reference_uid else {
        return Ok(());
    };
    let key = guard_key(&task.task_type, reference);
    let stop = take(table, &key, task, now, |holder| {
        let active = match &holder.task {
            Some(held) => !held.status.is_finished(),
            None => holder.young,
        };
        active.then_some(Stop::Duplicate(holder.id))
    })
    .await?;
    match stop {
        None => Ok(()),
        Some(Stop::Duplicate(existing)) => Err(StoreError::Duplicate { existing }),
        Some(Stop::Existing(existing)) => Err(StoreError::Duplicate {
            existing: existing.id,
        }),
        Some(Stop::InFlight) => Err(StoreError::unavailable(
            "the reference is being taken; try again",
        )),
    }
}

/// The task an idempotency guard already names, if any, waiting briefly for a create in
/// flight; otherwise the guard is now `task`'s.
pub async fn idempotent_replay(
    table: &Table,
    task: &Task,
    key: &str,
) -> Result<Option<Created>, StoreError> {
    let guard = idempotency_key_of(&task.task_type, key);
    for _ in 0..IN_FLIGHT_POLLS {
        let stop = take(
            table,
            &guard,
            task,
            task.created_at,
            |holder| match &holder.task {
                Some(existing) => Some(Stop::Existing(Box::new(existing.clone()))),
                None if holder.young => Some(Stop::InFlight),
                None => None,
            },
        )
        .await?;
        match stop {
            None => return Ok(None),
            Some(Stop::Existing(existing)) => return Ok(Some(Created::Existing(*existing))),
            Some(Stop::InFlight) => tokio::time::sleep(IN_FLIGHT_WAIT).await,
            Some(Stop::Duplicate(existing)) => return Err(StoreError::Duplicate { existing }),
        }
    }
    Err(StoreError::unavailable(format!(
        "a create with idempotencyKey {key:?} is still in progress; try again"
    )))
}

/// The task holding the reference guard of `(task_type, reference_uid)`, read consistently.
pub async fn reference_holder(
    table: &Table,
    task_type: &str,
    reference_uid: &str,
) -> Result<Option<TaskId>, StoreError> {
    let Some(item) = table.get(&guard_key(task_type, reference_uid)).await? else {
        return Ok(None);
    };
    Ok(GuardItem::from_item(item)?.task_id.parse().ok())
}

/// The write that re-takes `task`'s reference guard with a fresh version, as part of a
/// transaction: it fails if another task took the guard since.
pub fn retake_reference(
    table: &Table,
    task: &Task,
    reference_uid: &str,
    now: Timestamp,
) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, StoreError> {
    let guard = GuardItem::new(&guard_key(&task.task_type, reference_uid), task.id, now);
    table.put_in_transaction(guard.to_item()?, expr::guard_held_by(&task.id.to_string()))
}

/// Deletes the guards `task` holds (reference and idempotency), where they still name it.
pub async fn release_all(table: &Table, task: &Task) -> Result<(), StoreError> {
    let mut keys = Vec::new();
    if let Some(reference) = &task.reference_uid {
        keys.push(guard_key(&task.task_type, reference));
    }
    if let Some(key) = &task.idempotency_key {
        keys.push(idempotency_key_of(&task.task_type, key));
    }
    for key in keys {
        // A failed condition: another task holds it now, which is as it should be.
        table
            .delete(&key, expr::guard_held_by(&task.id.to_string()))
            .await?;
    }
    Ok(())
}
