//! Task handlers: the registry that maps a task type to its handler, and the shipped handlers.

pub mod webhook;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use std::time::Duration;

use crate::retry::RetryPolicy;
use crate::task::{
    DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_LIMIT, TaskId, ValidationError, validate_type,
};

/// What a handler reports when its attempt fails. New kinds may be added: match with a
/// wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The attempt failed; the task is retried while attempts remain.
    #[error("{0}")]
    Retryable(String),
    /// The task can never succeed (e.g. a malformed payload): fail it now, whatever attempts remain.
    #[error("{0}")]
    Permanent(String),
    /// The attempt failed and the other side named the earliest time to try again (an HTTP
    /// `Retry-After`): retried while attempts remain, not sooner than `after` from now (nor
    /// sooner than the task's backoff; at most [`MAX_RETRY_AFTER`]).
    #[error("{error}")]
    RetryAfter {
        /// What went wrong, as `lastError` keeps it.
        error: String,
        /// How long the other side asked to wait.
        after: Duration,
    },
    /// The attempt did not run: its receiver is known to be down (an open circuit). The task
    /// is given back with its attempt uncounted and due again after `after`.
    #[error("{reason}")]
    Hold {
        /// Why, for the log.
        reason: String,
        /// How long to wait.
        after: Duration,
    },
}

/// The longest wait a [`TaskError::RetryAfter`] is granted: a receiver cannot park a task for
/// longer than a day per attempt.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

impl TaskError {
    /// True when no further attempt should be made.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent(_))
    }

    /// The wait the other side asked for before the next attempt, at most [`MAX_RETRY_AFTER`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RetryAfter { after, .. } => Some((*after).min(MAX_RETRY_AFTER)),
            _ => None,
        }
    }
}

/// What a handler is given for one attempt.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The task's id.
    pub id: TaskId,
    /// The task's type.
    pub task_type: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The task's payload text.
    pub payload: String,
}

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send>>;

/// A registered handler.
pub type Handler = Arc<dyn Fn(TaskContext) -> HandlerFuture + Send + Sync>;

/// What a task type gets when a create does not say otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TypeSettings {
    /// Attempts allowed unless the create sets `maxAttempts`.
    pub max_attempts: u32,
    /// Backoff between attempts, copied onto each new task.
    pub retry: RetryPolicy,
    /// Longest a single attempt may run (never beyond the invocation's remaining time).
    pub timeout: Duration,
    /// Most of the type's tasks one process runs at once (`None`: only the process's own
    /// concurrency caps them), so a slow type cannot take every slot. Per process: several
    /// processors (or Lambda invocations) each run up to this many.
    pub concurrency: Option<usize>,
}

impl Default for TypeSettings {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
            concurrency: None,
        }
    }
}

/// Registering a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The type already has a handler.
    #[error("task type {0:?} is already registered")]
    Duplicate(String),
    /// The type name breaks the naming rules.
    #[error("cannot register task type: {0}")]
    InvalidType(#[from] ValidationError),
    /// The type's settings are out of range.
    #[error("cannot register task type {0:?}: {1}")]
    InvalidSettings(String, String),
}

/// A type's check of a payload at create (and at a schedule's create): the rules its handler
/// would refuse the task for, answered before the task exists.
pub type PayloadCheck = fn(&str) -> Result<(), ValidationError>;

#[derive(Clone)]
struct Entry {
    handler: Handler,
    settings: TypeSettings,
    check: Option<PayloadCheck>,
}

/// Maps each task type to the one handler that runs it.
#[derive(Clone, Default)]
pub struct Registry {
    entries: HashMap<String, Entry>,
    defaults: TypeSettings,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("types", &self.types().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry whose types get [`TypeSettings::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry whose types get `defaults` unless registered with their own.
    pub fn with_defaults(defaults: TypeSettings) -> Self {
        Self {
            entries: HashMap::new(),
            defaults,
        }
    }

    /// Registers `handler` for `task_type` with the registry's default settings; a type
    /// registered twice is an error.
    pub fn register<F, Fut>(&mut self, task_type: &str, handler: F) -> Result<(), RegistryError>
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        self.register_with(task_type, self.defaults, handler)
    }

    /// Registers `handler` for `task_type` with its own attempts, retry policy and timeout.
    pub fn register_with<F, Fut>(
        &mut self,
        task_type: &str,
        settings: TypeSettings,
        handler: F,
    ) -> Result<(), RegistryError>
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        validate_type(task_type)?;
        if self.entries.contains_key(task_type) {
            return Err(RegistryError::Duplicate(task_type.to_owned()));
        }
        let invalid = |reason: String| RegistryError::InvalidSettings(task_type.to_owned(), reason);
        settings
            .retry
            .validate()
            .map_err(|err| invalid(err.to_string()))?;
        if settings.concurrency == Some(0) {
            return Err(invalid("concurrency must be at least 1".to_owned()));
        }
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&settings.max_attempts) {
            return Err(invalid(format!(
                "max_attempts must be 1 to {MAX_ATTEMPTS_LIMIT}"
            )));
        }
        let handler: Handler = Arc::new(move |ctx| Box::pin(handler(ctx)));
        let entry = Entry {
            handler,
            settings,
            check: None,
        };
        self.entries.insert(task_type.to_owned(), entry);
        Ok(())
    }

    /// Gives the registered `task_type` a check of its payloads at create; false when the
    /// type is not registered.
    pub fn set_payload_check(&mut self, task_type: &str, check: PayloadCheck) -> bool {
        self.entries
            .get_mut(task_type)
            .map(|entry| entry.check = Some(check))
            .is_some()
    }

    /// Checks `payload` against `task_type`'s rules, if it has any.
    pub fn check_payload(&self, task_type: &str, payload: &str) -> Result<(), ValidationError> {
        match self.entries.get(task_type).and_then(|entry| entry.check) {
            Some(check) => check(payload),
            None => Ok(()),
        }
    }

    /// The handler for `task_type`, if registered.
    pub fn get(&self, task_type: &str) -> Option<Handler> {
        self.entries
            .get(task_type)
            .map(|entry| Arc::clone(&entry.handler))
    }

    /// The settings of `task_type`, if registered.
    pub fn settings(&self, task_type: &str) -> Option<TypeSettings> {
        self.entries.get(task_type).map(|entry| entry.settings)
    }

    /// True when `task_type` has a handler.
    pub fn contains(&self, task_type: &str) -> bool {
        self.entries.contains_key(task_type)
    }

    /// The registered types, in no particular order.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

/// The registry with every handler Tasker ships (`sendWebhook`), each with `defaults`.
#[cfg(feature = "webhook")]
pub fn builtin_registry(
    webhook: webhook::WebhookSender,
    defaults: TypeSettings,
) -> Result<Registry, RegistryError> {
    let mut registry = Registry::with_defaults(defaults);
    let webhook = Arc::new(webhook);
    registry.register(webhook::TASK_TYPE, move |ctx| {
        let webhook = Arc::clone(&webhook);
        async move { webhook.send(&ctx).await }
    })?;
    registry.set_payload_check(webhook::TASK_TYPE, webhook::check_payload);
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_registers_once() {
        let mut registry = Registry::new();
        registry.register("noop", |_| async { Ok(()) }).unwrap();
        assert_eq!(
            registry.register("noop", |_| async { Ok(()) }),
            Err(RegistryError::Duplicate("noop".into()))
        );
        assert!(registry.register("bad type", |_| async { Ok(()) }).is_err());
        assert!(registry.contains("noop"));
    }
}
