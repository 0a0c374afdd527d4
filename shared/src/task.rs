//! The task domain: identifiers, status, the stored task and the validated create request.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::clock::Timestamp;
use crate::retry::RetryPolicy;

/// Largest payload accepted, in bytes of its stored text.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Longest accepted `referenceUid` or `idempotencyKey`, in characters.
pub const MAX_REFERENCE_UID_CHARS: usize = 256;
/// Longest accepted task type, in characters.
pub const MAX_TYPE_CHARS: usize = 128;
/// `maxAttempts` used when a create does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Upper bound on `maxAttempts`.
pub const MAX_ATTEMPTS_LIMIT: u32 = 50;

/// Unique task identifier: a ULID, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(ulid::Ulid);

impl TaskId {
    /// A fresh id for a task created at `now`.
    pub fn new(now: OffsetDateTime) -> Self {
        let millis = (now.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis);
        Self(ulid::Ulid::from_datetime(time))
    }

    /// The id with time `at` and the low 80 of `bits` as its random part: the same inputs give
    /// the same id (see [`crate::schedule::tick_task_id`]).
    pub fn derived(at: Timestamp, bits: u128) -> Self {
        let millis = (at.0.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
        Self(ulid::Ulid::from_parts(millis, bits))
    }

    /// The id's 128 bits, for spreading tasks over shards.
    pub fn as_u128(self) -> u128 {
        self.0.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The text was not a task id (a 26-character ULID).
#[derive(Debug, thiserror::Error)]
#[error("not a task id: {0:?}")]
pub struct InvalidTaskId(pub String);

impl FromStr for TaskId {
    type Err = InvalidTaskId;

    /// Only the canonical spelling (26 upper-case Crockford characters, the first at most
    /// `7`): the decoder also takes lower case and an overflowing first character, which would
    /// give one task several ids.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidTaskId(s.chars().take(64).collect());
        let ulid = ulid::Ulid::from_string(s).map_err(|_| invalid())?;
        if ulid.to_string() != s {
            return Err(invalid());
        }
        Ok(Self(ulid))
    }
}

impl Serialize for TaskId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The key limit a pending task was held back for (see [`Task::held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Held {
    /// Its `concurrencyKey` had as many tasks running as its limit allows.
    Concurrency,
    /// Its `rateKey` had started as many tasks as its rate allows for now.
    Rate,
    /// Its receiver's circuit was open: too many of the last attempts to it failed.
    Circuit,
}

impl Held {
    /// The reason as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Concurrency => "concurrency",
            Self::Rate => "rate",
            Self::Circuit => "circuit",
        }
    }

    /// The stored reason, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "concurrency" => Some(Self::Concurrency),
            "rate" => Some(Self::Rate),
            "circuit" => Some(Self::Circuit),
            _ => None,
        }
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Waiting for `scheduledAt`, or for its next attempt.
    Pending,
    /// Claimed by a processor; the lease says until when.
    Running,
    /// The handler returned success.
    Succeeded,
    /// Out of attempts, or failed permanently; kept for inspection until cleanup.
    Failed,
    /// Cancelled before it ran; kept until cleanup.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in the order of a task's life.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The status as stored and shown in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// True once the task will never run again.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status text was not one of the five statuses.
#[derive(Debug, thiserror::Error)]
#[error("unknown task status {0:?}")]
pub struct InvalidStatus(pub String);

impl FromStr for TaskStatus {
    type Err = InvalidStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "running" => Ok(Self::Running),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            "cancelled" => Ok(Self::Cancelled),
            other => Err(InvalidStatus(other.to_owned())),
        }
    }
}

/// A stored task, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Unique id, sortable by creation.
    pub id: TaskId,
    /// The registered task type that runs it.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Opaque payload text handed to the handler.
    pub payload: String,
    /// Where the task is in its life.
    pub status: TaskStatus,
    /// Not run before this instant.
    pub scheduled_at: Timestamp,
    /// When the task was created.
    pub created_at: Timestamp,
    /// When the task last changed.
    pub updated_at: Timestamp,
    /// Attempts started so far (counted when claimed).
    pub attempts: u32,
    /// Attempts allowed before the task is `failed`.
    pub max_attempts: u32,
    /// The error of the most recent failed attempt.
    pub last_error: Option<String>,
    /// When the most recent attempt failed.
    pub last_failed_attempt_at: Option<Timestamp>,
    /// When the task succeeded.
    pub succeeded_at: Option<Timestamp>,
    /// When the task reached `succeeded`, `failed` or `cancelled`.
    pub finished_at: Option<Timestamp>,
    /// The caller's reference, for de-duplication and cancel by reference.
    pub reference_uid: Option<String>,
    /// While `running`: the claim expires at this instant and the task is due again.
    pub lease_expires_at: Option<Timestamp>,
    /// The caller's key that makes repeating this create return this task.
    pub idempotency_key: Option<String>,
    /// The backoff between attempts, fixed when the task was created.
    pub retry_policy: RetryPolicy,
    /// The schedule whose tick created the task, if one did.
    pub schedule_name: Option<String>,
    /// The tick of that schedule the task is for.
    pub schedule_tick: Option<Timestamp>,
    /// Tasks sharing this key run at most its limit's number at once, in every process
    /// together (see [`crate::store::KeyLimits`]).
    #[serde(default)]
    pub concurrency_key: Option<String>,
    /// Tasks sharing this key start at most at its limit's rate, in every process together.
    #[serde(default)]
    pub rate_key: Option<String>,
    /// While pending: the key limit a claim found full and held the task back for, until its
    /// `scheduledAt`. Shown through `waiting`, never by itself.
    #[serde(skip)]
    pub held: Option<Held>,
    /// Unique per claim: fences outcome writes, and lets a retried write recognise that its
    /// first try landed. Internal to the stores, never shown by the API.
    #[serde(skip)]
    pub lease_token: Option<String>,
}

impl Task {
    /// The task a validated create request stores, with the default attempts and retry policy.
    pub fn from_new(new: NewTask, now: Timestamp) -> Self {
        Self::from_new_with(new, now, DEFAULT_MAX_ATTEMPTS, RetryPolicy::default())
    }

    /// The task a validated create request stores; `max_attempts` applies when the request
    /// does not set it.
    pub fn from_new_with(
        new: NewTask,
        now: Timestamp,
        max_attempts: u32,
        retry_policy: RetryPolicy,
    ) -> Self {
        Self {
            id: TaskId::new(now.0),
            task_type: new.task_type,
            payload: new.payload,
            status: TaskStatus::Pending,
            scheduled_at: new.scheduled_at.unwrap_or(now),
            created_at: now,
            updated_at: now,
            attempts: 0,
            max_attempts: new.max_attempts.unwrap_or(max_attempts),
            last_error: None,
            last_failed_attempt_at: None,
            succeeded_at: None,
            finished_at: None,
            reference_uid: new.reference_uid,
            lease_expires_at: None,
            idempotency_key: new.idempotency_key,
            retry_policy,
            schedule_name: None,
            schedule_tick: None,
            concurrency_key: new.concurrency_key,
            rate_key: new.rate_key,
            held: None,
            lease_token: None,
        }
    }

    /// The instant from which a processor may claim the task, if it can be claimed at all.
    pub fn due_at(&self) -> Option<Timestamp> {
        match self.status {
            TaskStatus::Pending => Some(self.scheduled_at),
            TaskStatus::Running => self.lease_expires_at,
            _ => None,
        }
    }

    /// The instant the task is queued at: while pending, running or succeeded, when it was
    /// scheduled (never before it was created); once failed or cancelled, its finish.
    /// Listings and the DynamoDB queue index order tasks by it. A claim and a success leave it
    /// alone, so on DynamoDB they rewrite the item without touching the index.
    pub fn queue_at(&self) -> Timestamp {
        match self.status {
            TaskStatus::Pending | TaskStatus::Running | TaskStatus::Succeeded => {
                self.scheduled_at.max(self.created_at)
            }
            TaskStatus::Failed | TaskStatus::Cancelled => {
                self.finished_at.unwrap_or(self.updated_at)
            }
        }
    }
}

/// A validated request to create a task.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Registered task type.
    pub task_type: String,
    /// Payload text, at most [`MAX_PAYLOAD_BYTES`].
    pub payload: String,
    /// Run no earlier than this; `None` means now.
    pub scheduled_at: Option<Timestamp>,
    /// Attempts allowed, 1 to [`MAX_ATTEMPTS_LIMIT`]; `None` takes the type's default.
    pub max_attempts: Option<u32>,
    /// Optional caller reference.
    pub reference_uid: Option<String>,
    /// Optional key: repeating a create with the same key and type returns the first task.
    pub idempotency_key: Option<String>,
    /// Optional key whose concurrency limit the task runs under.
    pub concurrency_key: Option<String>,
    /// Optional key whose rate limit the task starts under.
    pub rate_key: Option<String>,
}

/// Why a create request is invalid; each names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A required field is absent.
    #[error("`{0}` is required")]
    Missing(&'static str),
    /// A field has a value outside its rules.
    #[error("`{field}` {reason}")]
    Invalid {
        /// The JSON field name.
        field: &'static str,
        /// What is wrong, in words.
        reason: String,
    },
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`].
    #[error("`payload` is {0} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes")]
    PayloadTooLarge(usize),
}

impl NewTask {
    /// A request for `task_type` with `payload`, run now, default attempts, no reference.
    pub fn new(task_type: impl Into<String>, payload: impl Into<String>) -> Self {
        Self {
            task_type: task_type.into(),
            payload: payload.into(),
            scheduled_at: None,
            max_attempts: None,
            reference_uid: None,
            idempotency_key: None,
            concurrency_key: None,
            rate_key: None,
        }
    }

    /// Checks every field rule that does not need the registry or the store.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_type(&self.task_type)?;
        validate_payload_and_attempts(&self.payload, self.max_attempts)?;
        if let Some(reference) = &self.reference_uid {
            validate_reference_uid(reference)?;
        }
        if let Some(key) = &self.idempotency_key {
            validate_key("idempotencyKey", key)?;
        }
        if let Some(key) = &self.concurrency_key {
            validate_key("concurrencyKey", key)?;
        }
        if let Some(key) = &self.rate_key {
            validate_key("rateKey", key)?;
        }
        Ok(())
    }
}

/// Checks a payload's size and an attempts limit, as a task's and a schedule's create do.
pub fn validate_payload_and_attempts(
    payload: &str,
    max_attempts: Option<u32>,
) -> Result<(), ValidationError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(ValidationError::PayloadTooLarge(payload.len()));
    }
    if max_attempts.is_some_and(|n| !(1..=MAX_ATTEMPTS_LIMIT).contains(&n)) {
        return Err(ValidationError::Invalid {
            field: "maxAttempts",
            reason: format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
        });
    }
    Ok(())
}

/// Checks a task type: 1–128 characters of `[A-Za-z0-9_.:-]`.
pub fn validate_type(task_type: &str) -> Result<(), ValidationError> {
    validate_name_like("type", task_type, MAX_TYPE_CHARS)
}

/// Checks the identifier `value` of `field`: 1 to `max` characters of `[A-Za-z0-9_.:-]` (task
/// types and schedule names).
pub fn validate_name_like(
    field: &'static str,
    value: &str,
    max: usize,
) -> Result<(), ValidationError> {
    let valid_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if value.is_empty() || value.len() > max || !valid_chars {
        return Err(ValidationError::Invalid {
            field,
            reason: format!("must be 1 to {max} characters of A-Z a-z 0-9 _ . : -"),
        });
    }
    Ok(())
}

/// Checks a reference: 1–256 characters.
pub fn validate_reference_uid(reference: &str) -> Result<(), ValidationError> {
    validate_key("referenceUid", reference)
}

/// Checks a free-form key of `field` (`referenceUid`, `idempotencyKey`): 1 to
/// [`MAX_REFERENCE_UID_CHARS`] characters, none of them U+0000, which PostgreSQL's text cannot
/// hold (refused on every store, so a task means the same wherever it is kept).
pub fn validate_key(field: &'static str, value: &str) -> Result<(), ValidationError> {
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_REFERENCE_UID_CHARS {
        return Err(ValidationError::Invalid {
            field,
            reason: format!("must be 1 to {MAX_REFERENCE_UID_CHARS} characters"),
        });
    }
    if value.contains('\0') {
        return Err(ValidationError::Invalid {
            field,
            reason: "must not contain the character U+0000".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_time() {
        let early = TaskId::new(time::macros::datetime!(2026-01-01 00:00 UTC));
        let late = TaskId::new(time::macros::datetime!(2026-01-01 00:00:01 UTC));
        assert!(early < late);
        assert_eq!(early.to_string().parse::<TaskId>().unwrap(), early);
    }

    #[test]
    fn an_id_has_one_spelling() {
        let id = TaskId::new(time::macros::datetime!(2026-01-01 00:00 UTC));
        let canonical = id.to_string();
        assert!(canonical.starts_with('0'), "{canonical}");
        let lower = canonical.to_lowercase();
        let overflowing = format!("8{}", &canonical[1..]);
        let also_overflowing = format!("G{}", &canonical[1..]);
        for other in [lower, overflowing, also_overflowing] {
            assert!(
                other.parse::<TaskId>().is_err(),
                "{other} is not {canonical}"
            );
        }
        assert_eq!(canonical.parse::<TaskId>().unwrap(), id);
    }

    #[test]
    fn type_rules_name_the_field() {
        assert!(validate_type("sendWebhook").is_ok());
        assert!(validate_type("a.b:c-d_e").is_ok());
        for bad in ["", "has space", "ünicode", &"x".repeat(129)] {
            let err = validate_type(bad).unwrap_err();
            assert!(err.to_string().contains("`type`"), "{err}");
        }
    }

    #[test]
    fn max_attempts_bounds() {
        let mut new = NewTask::new("t", "{}");
        new.max_attempts = Some(0);
        assert!(new.validate().is_err());
        new.max_attempts = Some(51);
        assert!(new.validate().is_err());
        new.max_attempts = Some(50);
        assert!(new.validate().is_ok());
        new.max_attempts = None;
        assert!(new.validate().is_ok());
    }
}
