//! Schedules: their operations (validated against the registry), and firing the due ones.
//!
//! Firing a schedule is two writes: the tick's task, whose id is derived from `(name, tick)`
//! so that a second create of it stores nothing, then `nextRunAt` advanced under a condition
//! on the revision read. Two processors that fire the same tick store one task; a processor
//! that dies between the writes leaves the schedule due, and the next one finds the task
//! already there and advances. No leader, no per-process list.

use std::time::Duration;

use serde::Serialize;

use super::{Tasker, TaskerError};
use crate::clock::Timestamp;
use crate::report::Report;
use crate::schedule::{
    MAX_MISSED_TICKS, Missed, ON_TIME, Schedule, ScheduleSpec, Timing, fresh_revision, tick_task_id,
};
use crate::store::{Created, Expect, ScheduleWrite, Store, StoreError};
use crate::task::{NewTask, Task, ValidationError};

/// Most schedules one pass fires; the rest are fired by the next pass.
const FIRE_LIMIT: usize = 100;
/// How long a process leaves a schedule it cannot fire (a type it has not registered, an
/// expression it cannot read) to other processes before it tries again.
const HOLD: Duration = Duration::from_secs(60);

/// The schedules this process cannot fire, and until when it leaves them alone: they stay due
/// for a process that can (a deploy in progress), without being retried and logged every
/// second here, or filling every pass's room.
#[derive(Debug, Default)]
pub(super) struct Held(std::sync::Mutex<std::collections::HashMap<String, Timestamp>>);

impl Held {
    /// The names held at `now` (expired holds dropped).
    fn at(&self, now: Timestamp) -> std::collections::HashSet<String> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|_, until| *until > now);
        held.keys().cloned().collect()
    }

    fn hold(&self, name: &str, until: Timestamp) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(name.to_owned(), until);
    }
}
/// Read-modify-write rounds an operator's change makes before giving up on a busy schedule.
const CHANGE_TRIES: usize = 4;

/// What one pass over the due schedules did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FireSummary {
    /// Schedules found due.
    pub due: usize,
    /// Tasks created for their ticks.
    pub created: usize,
    /// Ticks whose task an earlier pass (here or in another process) had stored.
    pub existing: usize,
    /// Schedules advanced past now.
    pub advanced: usize,
    /// Schedules another process advanced or changed first.
    pub lost: usize,
    /// Schedules that could not be fired (logged); they stay due.
    pub errors: usize,
}

/// A schedule as the API shows it: with its next fire times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    /// The stored schedule.
    #[serde(flatten)]
    pub schedule: Schedule,
    /// The next five ticks it fires (none while paused).
    pub next_runs: Vec<Timestamp>,
}

impl ScheduleView {
    /// `schedule` with its next five ticks.
    pub fn of(schedule: Schedule) -> Self {
        let next_runs = match (schedule.paused, schedule.next_run_at, schedule.timing()) {
            (false, Some(next), Ok(timing)) => std::iter::once(next)
                .chain(timing.upcoming(next, 4))
                .collect(),
            _ => Vec::new(),
        };
        Self {
            schedule,
            next_runs,
        }
    }
}

/// The ticks of `schedule` to fire at `now`, earliest first, as its missed-tick policy says.
pub fn ticks_to_fire(schedule: &Schedule, timing: &Timing, now: Timestamp) -> Vec<Timestamp> {
    let Some(from) = schedule.next_run_at else {
        return Vec::new();
    };
    let mut ticks = match schedule.missed {
        Missed::Latest => timing.ticks_back(from, now, 1),
        Missed::Skip => timing
            .ticks_back(from, now, 1)
            .into_iter()
            .filter(|tick| now.since(*tick) <= ON_TIME)
            .collect(),
        Missed::All => timing.ticks_back(from, now, MAX_MISSED_TICKS),
    };
    ticks.reverse();
    ticks
}

fn busy(name: &str) -> TaskerError {
    TaskerError::Store(StoreError::unavailable(format!(
        "schedule {name:?} kept changing while it was written; try again"
    )))
}

fn invalid_stored(schedule: &Schedule, err: crate::schedule::TimingError) -> TaskerError {
    TaskerError::Invalid(ValidationError::Invalid {
        field: "cron",
        reason: format!(
            "stored schedule {:?} no longer parses: {err}",
            schedule.name
        ),
    })
}

impl<S: Store> Tasker<S> {
    /// Fires every due schedule (at most 100 a pass): see the module's documentation.
    pub async fn fire_schedules(&self) -> Result<FireSummary, TaskerError> {
        let now = self.clock.now();
        let held = self.held_schedules.at(now);
        let due: Vec<Schedule> = self
            .store
            .schedule_list_due(now, FIRE_LIMIT + held.len())
            .await?
            .into_iter()
            .filter(|schedule| !held.contains(&schedule.name))
            .take(FIRE_LIMIT)
            .collect();
        let mut summary = FireSummary {
            due: due.len(),
            ..FireSummary::default()
        };
        for schedule in &due {
            match self.fire(schedule, now, &mut summary).await {
                Ok(()) => {}
                Err(err @ (TaskerError::UnknownType(_) | TaskerError::Invalid(_))) => {
                    summary.errors += 1;
                    self.held_schedules.hold(&schedule.name, now.plus(HOLD));
                    tracing::warn!(schedule = %schedule.name, error = %Report(&err), "this process cannot fire the schedule; it stays due for one that can, and is tried here again in 60 s");
                }
                Err(err) => {
                    summary.errors += 1;
                    tracing::warn!(schedule = %schedule.name, error = %Report(&err), "could not fire the schedule; it stays due");
                }
            }
        }
        if summary.created > 0 || summary.errors > 0 {
            tracing::info!(
                due = summary.due,
                created = summary.created,
                existing = summary.existing,
                lost = summary.lost,
                errors = summary.errors,
                "schedules fired"
            );
        }
        Ok(summary)
    }

    async fn fire(
        &self,
        schedule: &Schedule,
        now: Timestamp,
        summary: &mut FireSummary,
    ) -> Result<(), TaskerError> {
        let timing = schedule
            .timing()
            .map_err(|err| invalid_stored(schedule, err))?;
        let ticks = ticks_to_fire(schedule, &timing, now);
        let created = if ticks.is_empty() {
            Vec::new()
        } else {
            self.create_ticks(schedule, &ticks, now).await?
        };
        for created in created {
            match created {
                Created::New(_) => summary.created += 1,
                Created::Existing(_) => summary.existing += 1,
            }
        }
        if self
            .advance(schedule, &timing, ticks.last().copied(), now)
            .await?
        {
            summary.advanced += 1;
        } else {
            summary.lost += 1;
        }
        Ok(())
    }

    /// The first of firing's two writes: the tasks of `ticks`, each stored once whoever
    /// creates it (its id is derived from the schedule's name and the tick). Public so that
    /// a test can stop between the two writes, as a crash would.
    pub async fn create_ticks(
        &self,
        schedule: &Schedule,
        ticks: &[Timestamp],
        now: Timestamp,
    ) -> Result<Vec<Created>, TaskerError> {
        let mut results = Vec::with_capacity(ticks.len());
        let mut fresh = Vec::new();
        for &tick in ticks {
            let mut task = self.tick_task(schedule, tick, now)?;
            task.id = tick_task_id(&schedule.name, tick);
            let created = self.store.task_create(task).await?;
            match &created {
                Created::New(task) => {
                    tracing::info!(schedule = %schedule.name, tick = %tick, task_id = %task.id, "schedule fired");
                    fresh.push(task.clone());
                }
                Created::Existing(task) => {
                    tracing::info!(schedule = %schedule.name, tick = %tick, task_id = %task.id, "the tick's task was already stored");
                }
            }
            results.push(created);
        }
        if !fresh.is_empty() {
            self.due_now.notify_one();
            self.deliver(&fresh).await;
        }
        Ok(results)
    }

    /// The task of `schedule`'s tick `tick`, created at `now` (with a fresh id).
    fn tick_task(
        &self,
        schedule: &Schedule,
        tick: Timestamp,
        now: Timestamp,
    ) -> Result<Task, TaskerError> {
        let Some(settings) = self.registry.settings(&schedule.task_type) else {
            return Err(TaskerError::UnknownType(schedule.task_type.clone()));
        };
        let new = NewTask {
            scheduled_at: Some(tick),
            max_attempts: schedule.max_attempts,
            ..NewTask::new(schedule.task_type.clone(), schedule.payload.clone())
        };
        let mut task = Task::from_new_with(new, now, settings.max_attempts, settings.retry);
        task.schedule_name = Some(schedule.name.clone());
        task.schedule_tick = Some(tick);
        Ok(task)
    }

    /// The second write: `nextRunAt` moves to the first tick after `now`, if the schedule is
    /// still at the revision read. False when another process advanced or changed it first.
    async fn advance(
        &self,
        schedule: &Schedule,
        timing: &Timing,
        fired: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<bool, TaskerError> {
        let mut next = schedule.clone();
        next.next_run_at = timing.next_after(now);
        next.last_run_at = fired.or(schedule.last_run_at);
        next.updated_at = now;
        next.revision = fresh_revision();
        let written = self
            .store
            .schedule_put(&next, Expect::Revision(schedule.revision))
            .await?;
        Ok(written == ScheduleWrite::Written)
    }

    /// Runs one tick of `name` now, outside its timing: a task whose tick is now, with an id
    /// of its own (so it is never taken for a real tick's task). `nextRunAt` is left alone.
    pub async fn trigger_schedule(&self, name: &str) -> Result<Task, TaskerError> {
        let schedule = self.schedule(name).await?;
        let now = self.clock.now();
        let task = self.tick_task(&schedule, now, now)?;
        let task = self.store.task_create(task).await?.into_task();
        self.due_now.notify_one();
        self.deliver(std::slice::from_ref(&task)).await;
        Ok(task)
    }

    /// Checks `spec` as a create would (field rules, and a type registered here) without
    /// writing anything.
    pub fn validate_schedule(&self, spec: &ScheduleSpec) -> Result<(), TaskerError> {
        self.check(spec).map(|_| ())
    }

    /// Validates `spec` (its type must be registered here) and parses its timing.
    fn check(&self, spec: &ScheduleSpec) -> Result<Timing, TaskerError> {
        let timing = spec.validate()?;
        if self.registry.settings(&spec.task_type).is_none() {
            return Err(TaskerError::UnknownType(spec.task_type.clone()));
        }
        self.registry
            .check_payload(&spec.task_type, &spec.payload)?;
        Ok(timing)
    }

    /// Creates a schedule, first due at its tick after now.
    /// [`TaskerError::ScheduleExists`] when the name is taken.
    pub async fn create_schedule(&self, spec: ScheduleSpec) -> Result<Schedule, TaskerError> {
        let timing = self.check(&spec)?;
        let schedule = Schedule::new(spec, &timing, self.clock.now());
        match self.store.schedule_put(&schedule, Expect::Absent).await? {
            ScheduleWrite::Written => Ok(schedule),
            ScheduleWrite::Conflict(_) => Err(TaskerError::ScheduleExists(schedule.name)),
        }
    }

    /// Creates the schedule or replaces its definition; true when it was created. A changed
    /// expression or zone starts again from the tick after now.
    pub async fn put_schedule(&self, spec: ScheduleSpec) -> Result<(Schedule, bool), TaskerError> {
        let timing = self.check(&spec)?;
        for _ in 0..CHANGE_TRIES {
            let current = self.store.schedule_get(&spec.name).await?;
            let now = self.clock.now();
            let (schedule, expect) = match &current {
                None => (Schedule::new(spec.clone(), &timing, now), Expect::Absent),
                Some(current) if current.spec() == spec => return Ok((current.clone(), false)),
                Some(current) => (
                    current.replaced(spec.clone(), &timing, now),
                    Expect::Revision(current.revision),
                ),
            };
            if self.store.schedule_put(&schedule, expect).await? == ScheduleWrite::Written {
                return Ok((schedule, current.is_none()));
            }
        }
        Err(busy(&spec.name))
    }

    /// Pauses the schedule: it fires nothing until resumed.
    pub async fn pause_schedule(&self, name: &str) -> Result<Schedule, TaskerError> {
        self.set_paused(name, true).await
    }

    /// Resumes the schedule from its next tick after now (ticks passed while paused do not
    /// fire).
    pub async fn resume_schedule(&self, name: &str) -> Result<Schedule, TaskerError> {
        self.set_paused(name, false).await
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<Schedule, TaskerError> {
        for _ in 0..CHANGE_TRIES {
            let current = self.schedule(name).await?;
            if current.paused == paused {
                return Ok(current);
            }
            let timing = current
                .timing()
                .map_err(|err| invalid_stored(&current, err))?;
            let spec = ScheduleSpec {
                paused,
                ..current.spec()
            };
            let next = current.replaced(spec, &timing, self.clock.now());
            let expect = Expect::Revision(current.revision);
            if self.store.schedule_put(&next, expect).await? == ScheduleWrite::Written {
                return Ok(next);
            }
        }
        Err(busy(name))
    }

    /// The schedule `name`.
    pub async fn schedule(&self, name: &str) -> Result<Schedule, TaskerError> {
        self.store
            .schedule_get(name)
            .await?
            .ok_or_else(|| TaskerError::ScheduleNotFound(name.to_owned()))
    }

    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<Schedule>, TaskerError> {
        Ok(self.store.schedule_list().await?)
    }

    /// Deletes the schedule `name`; the tasks its ticks created stay.
    pub async fn delete_schedule(&self, name: &str) -> Result<(), TaskerError> {
        if self.store.schedule_delete(name).await? {
            Ok(())
        } else {
            Err(TaskerError::ScheduleNotFound(name.to_owned()))
        }
    }
}
