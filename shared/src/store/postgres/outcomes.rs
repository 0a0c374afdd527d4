//! Outcomes by group commit: outcomes that arrive while a group is being written wait and are
//! written together in the next transaction, so a busy drain commits (and, with synchronous
//! commits, flushes the write-ahead log) once per group instead of once per task.

use std::sync::Mutex;

use tokio::sync::oneshot;

use super::{PgStore, bulk, keys, pg_error, raw};
use crate::clock::Timestamp;
use crate::store::{Settlement, StoreError, Transition};
use crate::task::{Task, TaskId};

/// An outcome waiting for the next group, and where its answer goes.
pub(super) struct SettleRequest {
    id: TaskId,
    settle: Transition,
    /// What the outcome makes of the claimed attempt, if it applies to it.
    written: Option<Task>,
    reply: oneshot::Sender<Result<Task, StoreError>>,
}

/// The outcomes waiting, and the turn of the one group written at a time.
#[derive(Default)]
pub(super) struct Groups {
    waiting: Mutex<Vec<SettleRequest>>,
    turn: tokio::sync::Mutex<()>,
}

impl Groups {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<SettleRequest>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PgStore {
    /// Records an outcome by group commit; see [`crate::store::Store::task_settle`]. The
    /// request that finds no one waiting starts a writer, which waits for the group before it
    /// to commit, then takes every request waiting by then (its own among them) and writes
    /// them in one transaction. The writer is a task of its own, so a caller that stops
    /// waiting strands no one.
    pub async fn task_settle(
        &self,
        claimed: &Task,
        outcome: Settlement,
        now: Timestamp,
    ) -> Result<Task, StoreError> {
        let settle = Transition::settle(claimed, outcome, now)?;
        let (reply, answer) = oneshot::channel();
        let request = SettleRequest {
            id: claimed.id,
            written: settle.apply(claimed).ok(),
            settle,
            reply,
        };
        let leads = {
            let mut waiting = self.groups.waiting();
            waiting.push(request);
            waiting.len() == 1
        };
        if leads {
            let store = self.clone();
            tokio::spawn(async move {
                let _turn = store.groups.turn.lock().await;
                let group = std::mem::take(&mut *store.groups.waiting());
                match store.write_group(&group).await {
                    Ok(results) => {
                        for (request, result) in group.into_iter().zip(results) {
                            let _ = request.reply.send(result);
                        }
                    }
                    Err(err) => {
                        for request in group {
                            let _ = request.reply.send(Err(err.clone()));
                        }
                    }
                }
            });
        }
        answer.await.map_err(|_| {
            StoreError::unavailable("the PostgreSQL outcome writer stopped before answering")
        })?
    }

    /// Writes the outcomes of `group` in one transaction of four statements (begin, lock the
    /// rows, write the changes, commit): each one's answer, or, when the database fails, the
    /// failure of the whole group (rolled back; the processor tries its outcomes again). An
    /// outcome the store refuses (a lost lease) writes nothing and the others go on.
    async fn write_group(
        &self,
        group: &[SettleRequest],
    ) -> Result<Vec<Result<Task, StoreError>>, StoreError> {
        let mut client = self.client().await?;
        let tx = raw(&mut client)
            .transaction()
            .await
            .map_err(|err| pg_error("starting a group of outcomes", err))?;
        let ids: Vec<TaskId> = group.iter().map(|request| request.id).collect();
        let stored = bulk::load_locked(&tx, &ids).await?;
        let results: Vec<Result<Task, StoreError>> = group
            .iter()
            .map(|request| settle_one(request, stored.get(&request.id)))
            .collect();
        // A task settled twice in one group (an answer lost, the outcome tried again) is
        // written once.
        let mut changed: Vec<&Task> = Vec::new();
        for (request, result) in group.iter().zip(&results) {
            if let (Ok(after), Some(before)) = (result, stored.get(&request.id)) {
                if after != before && !changed.iter().any(|task| task.id == after.id) {
                    changed.push(after);
                }
            }
        }
        bulk::write_changes(&tx, &changed)
            .await
            .map_err(|err| pg_error("writing a group of outcomes", err))?;
        if let Some(now) = group.iter().find_map(|request| match &request.settle {
            Transition::Settle { now, .. } => Some(*now),
            _ => None,
        }) {
            keys::wake_held(&tx, &changed, now).await?;
        }
        tx.commit()
            .await
            .map_err(|err| pg_error("committing a group of outcomes", err))?;
        Ok(results)
    }
}

/// What `request` makes of the task as `stored` (locked): the task after its outcome; the
/// outcome written before (the processor tries again when an answer is lost) stands; a lost
/// lease or a missing task is refused.
fn settle_one(request: &SettleRequest, stored: Option<&Task>) -> Result<Task, StoreError> {
    let Some(before) = stored else {
        return Err(request.settle.missing(request.id));
    };
    match request.settle.apply(before) {
        Ok(after) => Ok(after),
        Err(refused) => match &request.written {
            Some(task) if task == before => Ok(task.clone()),
            _ => Err(request.settle.refusal(request.id, refused)),
        },
    }
}
