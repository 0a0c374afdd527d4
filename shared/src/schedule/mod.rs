//! Recurring tasks: a schedule names a cron expression, its time zone and the task each tick
//! creates. Schedules live in the store, so every processor fires every schedule: the tick's
//! task has an id derived from `(schedule name, tick instant)`, which makes its create
//! idempotent, and `nextRunAt` advances with a conditional write. See `docs/schedules.md`.

mod timing;

pub use timing::{Timing, TimingError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::task::{TaskId, ValidationError};

/// Longest schedule name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest `cron` expression, in characters.
pub const MAX_CRON_CHARS: usize = 256;
/// Longest `timezone` name, in characters (IANA names are far shorter).
pub const MAX_ZONE_CHARS: usize = 64;
/// Most ticks the `all` policy fires at once after a gap.
pub const MAX_MISSED_TICKS: usize = 100;
/// A tick later than this is missed: the `skip` policy does not fire it.
pub const ON_TIME: std::time::Duration = std::time::Duration::from_secs(300);

/// What a processor does with ticks that passed while no processor ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missed {
    /// One task, for the most recent tick.
    #[default]
    Latest,
    /// None: only a tick at most [`ON_TIME`] late fires.
    Skip,
    /// One task per tick, the most recent [`MAX_MISSED_TICKS`].
    All,
}

impl Missed {
    /// The policy as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Latest => "latest",
            Self::Skip => "skip",
            Self::All => "all",
        }
    }
}

impl std::str::FromStr for Missed {
    type Err = ValidationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "latest" => Ok(Self::Latest),
            "skip" => Ok(Self::Skip),
            "all" => Ok(Self::All),
            _ => Err(ValidationError::Invalid {
                field: "missed",
                reason: "must be one of latest, skip, all".to_owned(),
            }),
        }
    }
}

/// What a schedule does: the part a caller writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// Unique name, 1–128 characters of `[A-Za-z0-9_.:-]`.
    pub name: String,
    /// 5 fields, or 6 with seconds first.
    pub cron: String,
    /// IANA zone the expression is read in.
    pub timezone: String,
    /// The registered task type each tick creates.
    pub task_type: String,
    /// The payload of each tick's task.
    pub payload: String,
    /// Attempts of each tick's task; `None` takes the type's default.
    pub max_attempts: Option<u32>,
    /// What to do with ticks missed while no processor ran.
    pub missed: Missed,
    /// A paused schedule fires nothing.
    pub paused: bool,
}

impl ScheduleSpec {
    /// Checks every field that needs neither the registry nor the store, and parses the
    /// expression in its zone.
    pub fn validate(&self) -> Result<Timing, ValidationError> {
        validate_name(&self.name)?;
        crate::task::validate_type(&self.task_type)?;
        for (field, value, max) in [
            ("cron", &self.cron, MAX_CRON_CHARS),
            ("timezone", &self.timezone, MAX_ZONE_CHARS),
        ] {
            if value.chars().count() > max {
                return Err(ValidationError::Invalid {
                    field,
                    reason: format!("is longer than {max} characters"),
                });
            }
        }
        crate::task::validate_payload_and_attempts(&self.payload, self.max_attempts)?;
        Timing::parse(&self.cron, &self.timezone).map_err(|err| match err {
            TimingError::Zone(_) => ValidationError::Invalid {
                field: "timezone",
                reason: err.to_string(),
            },
            TimingError::Cron(_) | TimingError::Never(_) => ValidationError::Invalid {
                field: "cron",
                reason: err.to_string(),
            },
        })
    }
}

/// Checks a schedule name: 1–128 characters of `[A-Za-z0-9_.:-]`.
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    crate::task::validate_name_like("name", name, MAX_NAME_CHARS)
}

/// A stored schedule, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Unique name.
    pub name: String,
    /// The cron expression.
    pub cron: String,
    /// The IANA zone it is read in.
    pub timezone: String,
    /// The task type each tick creates.
    #[serde(rename = "type")]
    pub task_type: String,
    /// The payload of each tick's task.
    pub payload: String,
    /// Attempts of each tick's task; `None` takes the type's default.
    pub max_attempts: Option<u32>,
    /// What to do with missed ticks.
    pub missed: Missed,
    /// A paused schedule fires nothing; resuming starts from the next tick.
    pub paused: bool,
    /// The next tick to fire; `None` when the expression never fires again.
    pub next_run_at: Option<Timestamp>,
    /// The latest tick fired.
    pub last_run_at: Option<Timestamp>,
    /// When the schedule was created.
    pub created_at: Timestamp,
    /// When its definition or state last changed.
    pub updated_at: Timestamp,
    /// A token new with every write (random), which writes are conditioned on: a schedule
    /// deleted and created again never has the revision a stale reader holds. Internal to the
    /// stores.
    #[serde(skip)]
    pub revision: u64,
}

impl Schedule {
    /// A new schedule from a validated `spec`, first due at the tick after `now`.
    pub fn new(spec: ScheduleSpec, timing: &Timing, now: Timestamp) -> Self {
        Self::from_spec(spec, timing.next_after(now), None, now, now)
    }

    /// This schedule with its definition replaced by `spec` at `now`. A changed expression or
    /// zone, or a resume, starts again from the tick after `now`; otherwise `nextRunAt` stays.
    pub fn replaced(&self, spec: ScheduleSpec, timing: &Timing, now: Timestamp) -> Self {
        let retimed = spec.cron != self.cron || spec.timezone != self.timezone;
        let resumed = self.paused && !spec.paused;
        let next_run_at = if retimed || resumed {
            timing.next_after(now)
        } else {
            self.next_run_at
        };
        Self::from_spec(spec, next_run_at, self.last_run_at, self.created_at, now)
    }

    /// `spec` with its state, at a fresh revision.
    fn from_spec(
        spec: ScheduleSpec,
        next_run_at: Option<Timestamp>,
        last_run_at: Option<Timestamp>,
        created_at: Timestamp,
        updated_at: Timestamp,
    ) -> Self {
        Self {
            name: spec.name,
            cron: spec.cron,
            timezone: spec.timezone,
            task_type: spec.task_type,
            payload: spec.payload,
            max_attempts: spec.max_attempts,
            missed: spec.missed,
            paused: spec.paused,
            next_run_at,
            last_run_at,
            created_at,
            updated_at,
            revision: fresh_revision(),
        }
    }

    /// The definition part.
    pub fn spec(&self) -> ScheduleSpec {
        ScheduleSpec {
            name: self.name.clone(),
            cron: self.cron.clone(),
            timezone: self.timezone.clone(),
            task_type: self.task_type.clone(),
            payload: self.payload.clone(),
            max_attempts: self.max_attempts,
            missed: self.missed,
            paused: self.paused,
        }
    }

    /// The expression in its zone. Stored schedules were validated when written; one that no
    /// longer parses (a zone dropped from a later database) is an error the caller logs.
    pub fn timing(&self) -> Result<Timing, TimingError> {
        Timing::parse(&self.cron, &self.timezone)
    }

    /// True when a processor should fire it at `now`.
    pub fn is_due(&self, now: Timestamp) -> bool {
        !self.paused && self.next_run_at.is_some_and(|next| next <= now)
    }
}

/// A revision for a new write: random, below 2^63 so SQLite's INTEGER holds it.
pub fn fresh_revision() -> u64 {
    rand::random::<u64>() >> 1
}

/// The id of the task a schedule's tick creates: a ULID whose time is the tick and whose
/// random bits are the start of SHA-256 of `(name, tick)`. Every processor derives the same id
/// for the same tick, so creating the tick's task twice stores it once.
pub fn tick_task_id(name: &str, tick: Timestamp) -> TaskId {
    let digest = Sha256::digest(format!("{name}\n{}", tick.to_text()).as_bytes());
    let mut bits = [0u8; 16];
    bits.copy_from_slice(&digest[..16]);
    TaskId::derived(tick, u128::from_be_bytes(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_ids_are_stable_and_differ_by_name_and_tick() {
        let tick: Timestamp = "2026-06-01T09:00:00.000Z".parse().expect("instant");
        let later = tick.plus(std::time::Duration::from_secs(60));
        assert_eq!(tick_task_id("a", tick), tick_task_id("a", tick));
        assert_ne!(tick_task_id("a", tick), tick_task_id("b", tick));
        assert_ne!(tick_task_id("a", tick), tick_task_id("a", later));
        // The id's time is the tick's, so ids sort by tick.
        assert!(tick_task_id("z", tick) < tick_task_id("a", later));
    }

    #[test]
    fn names_follow_the_type_rules() {
        assert!(validate_name("nightly-report.v2:eu_1").is_ok());
        for bad in ["", "has space", "ü", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
