//! Outcomes by group commit: outcomes that arrive while a group is being written wait and are
//! written together in the next transaction, so a busy drain commits (and, with synchronous
//! commits, flushes the write-ahead log) once per group instead of once per task.

use std::sync::Mutex;

use tokio::sync::oneshot;

use super::{PgStore, Refused, apply, pg_error, raw};
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

    /// Writes the outcomes of `group` in one transaction: each one's answer, or the failure of
    /// the whole group (the transaction rolled back; the processor tries its outcomes again).
    /// A lost lease writes nothing and the others go on.
    async fn write_group(
        &self,
        group: &[SettleRequest],
    ) -> Result<Vec<Result<Task, StoreError>>, StoreError> {
        let mut client = self.client().await?;
        let tx = raw(&mut client)
            .transaction()
            .await
            .map_err(|err| pg_error("starting a group of outcomes", err))?;
        let mut results = Vec::with_capacity(group.len());
        for request in group {
            let result = settle_in(&tx, request).await;
            if let Err(err) = &result {
                if !matches!(err, StoreError::LeaseLost(_)) {
                    return Err(err.clone());
                }
            }
            results.push(result);
        }
        tx.commit()
            .await
            .map_err(|err| pg_error("committing a group of outcomes", err))?;
        Ok(results)
    }
}

/// One outcome inside the group's transaction.
async fn settle_in(
    tx: &tokio_postgres::Transaction<'_>,
    request: &SettleRequest,
) -> Result<Task, StoreError> {
    match apply(tx, request.id, &request.settle).await {
        Ok((_, after)) => Ok(after),
        // The same outcome, written before (the processor tries again when an answer is
        // lost): it stands.
        Err(Refused::Store(StoreError::LeaseLost(id))) => {
            let stored = super::rows::load(tx, id, false).await?;
            match &request.written {
                Some(task) if stored.as_ref() == Some(task) => Ok(task.clone()),
                _ => Err(StoreError::LeaseLost(id)),
            }
        }
        Err(Refused::Store(err)) => Err(err),
        Err(Refused::Unique(_, err)) => Err(pg_error("writing an outcome", err)),
    }
}
