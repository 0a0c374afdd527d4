//! Flow control in the engine: the paused types as this process last read them, read again
//! every [`PAUSES_SEEN_WITHIN`], and the gate each claim goes through (paused types closed,
//! capped types open for their free room in this process).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Tasker, TaskerError};
use crate::clock::Timestamp;
use crate::report::Report;
use crate::store::{ClaimGate, PausedTypes, Store, StoreError, TypeCount};

/// How stale a process's copy of the paused types may get: a pause stops new claims of its
/// type within this (plus a claim in flight), in every process.
pub const PAUSES_SEEN_WITHIN: Duration = Duration::from_secs(5);

/// This process's copy of the paused types, and when it was read.
#[derive(Debug, Default)]
pub(super) struct Pauses(Mutex<Option<(Instant, PausedTypes)>>);

impl Pauses {
    fn fresh(&self) -> Option<PausedTypes> {
        let last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < PAUSES_SEEN_WITHIN)
            .map(|(_, paused)| paused.clone())
    }

    fn last(&self) -> Option<PausedTypes> {
        let last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref().map(|(_, paused)| paused.clone())
    }

    fn keep(&self, paused: PausedTypes) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), paused));
    }
}

/// A task type as `GET /types` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeView {
    /// The type's name.
    pub name: String,
    /// True while paused: its tasks stay pending and are not claimed.
    pub paused: bool,
    /// When it was paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<Timestamp>,
    /// Attempts a task gets unless its create says otherwise.
    pub max_attempts: u32,
    /// Longest one attempt may run, in milliseconds.
    pub timeout_ms: u64,
    /// Most of its tasks one process runs at once; absent: no cap but the process's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Its tasks due now and running.
    #[serde(flatten)]
    pub counts: TypeCount,
}

/// Every registered type, and whether the counts are exact.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypesView {
    /// By name.
    pub types: Vec<TypeView>,
    /// False when a bounded look (DynamoDB) did not see every due or running task: counts are
    /// then at least what they say.
    pub exact: bool,
}

impl<S: Store> Tasker<S> {
    /// The paused types, read again when this process's copy is older than
    /// [`PAUSES_SEEN_WITHIN`]. A failed read keeps the last copy (logged); with none yet, it
    /// fails, and so does the claim that asked.
    pub async fn paused_now(&self) -> Result<PausedTypes, StoreError> {
        if let Some(paused) = self.pauses.fresh() {
            return Ok(paused);
        }
        match self.store.type_list_paused().await {
            Ok(paused) => {
                self.pauses.keep(paused.clone());
                Ok(paused)
            }
            Err(err) => match self.pauses.last() {
                Some(paused) => {
                    tracing::warn!(error = %Report(&err), "could not read the paused task types; keeping the last ones read");
                    Ok(paused)
                }
                None => Err(err),
            },
        }
    }

    /// True when a registered type has a concurrency cap: a claim's room for it counts the
    /// attempts running, so claims of it go one at a time.
    pub(super) fn any_type_capped(&self) -> bool {
        self.registry.types().any(|name| {
            self.registry
                .settings(name)
                .is_some_and(|s| s.concurrency.is_some())
        })
    }

    /// The gate for a claim while `running` (by type) run in this process.
    pub(super) async fn gate(
        &self,
        running: &HashMap<String, usize>,
    ) -> Result<ClaimGate, StoreError> {
        let paused = self.paused_now().await?;
        let room = self
            .registry
            .types()
            .filter_map(|name| {
                let cap = self.registry.settings(name)?.concurrency?;
                let busy = running.get(name).copied().unwrap_or_default();
                Some((name.to_owned(), cap.saturating_sub(busy)))
            })
            .collect();
        Ok(ClaimGate::new(paused, room).with_limits(self.key_limits.clone()))
    }

    /// Pauses (`paused`) or resumes the registered type `task_type`; the paused types after.
    pub async fn pause_type(
        &self,
        task_type: &str,
        paused: bool,
    ) -> Result<PausedTypes, TaskerError> {
        if !self.registry.contains(task_type) {
            return Err(TaskerError::UnknownType(task_type.to_owned()));
        }
        let now = self.clock.now();
        let after = self.store.type_set_paused(task_type, paused, now).await?;
        self.pauses.keep(after.clone());
        if paused {
            tracing::info!(task_type, "task type paused");
        } else {
            tracing::info!(task_type, "task type resumed");
            // Its tasks may be due now: a processor loop in this process looks at once.
            self.due_now.notify_one();
        }
        Ok(after)
    }

    /// Every registered type with its settings, paused flag and due and running tasks.
    pub async fn types(&self) -> Result<TypesView, TaskerError> {
        let now = self.clock.now();
        let (paused, counts) =
            futures::try_join!(self.store.type_list_paused(), self.store.type_count(now))?;
        let mut names: Vec<&str> = self.registry.types().collect();
        names.sort_unstable();
        let types = names
            .into_iter()
            .filter_map(|name| {
                let settings = self.registry.settings(name)?;
                Some(TypeView {
                    name: name.to_owned(),
                    paused: paused.contains_key(name),
                    paused_at: paused.get(name).copied(),
                    max_attempts: settings.max_attempts,
                    timeout_ms: u64::try_from(settings.timeout.as_millis()).unwrap_or(u64::MAX),
                    concurrency: settings.concurrency,
                    counts: counts.by_type.get(name).copied().unwrap_or_default(),
                })
            })
            .collect();
        Ok(TypesView {
            types,
            exact: counts.exact,
        })
    }
}
