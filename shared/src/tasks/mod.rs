//! Task handlers: the registry that maps a task type to its handler, and the shipped handlers.

pub mod webhook;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::task::{TaskId, ValidationError, validate_type};

/// What a handler reports when its attempt fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The attempt failed; the task is retried while attempts remain.
    #[error("{0}")]
    Retryable(String),
    /// The task can never succeed (e.g. a malformed payload): fail it now, whatever attempts remain.
    #[error("{0}")]
    Permanent(String),
}

impl TaskError {
    /// True when no further attempt should be made.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent(_))
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

/// Registering a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The type already has a handler.
    #[error("task type {0:?} is already registered")]
    Duplicate(String),
    /// The type name breaks the naming rules.
    #[error("cannot register task type: {0}")]
    InvalidType(#[from] ValidationError),
}

/// Maps each task type to the one handler that runs it.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Handler>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("types", &self.types().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `task_type`; a type registered twice is an error.
    pub fn register<F, Fut>(&mut self, task_type: &str, handler: F) -> Result<(), RegistryError>
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        validate_type(task_type)?;
        if self.handlers.contains_key(task_type) {
            return Err(RegistryError::Duplicate(task_type.to_owned()));
        }
        let handler: Handler = Arc::new(move |ctx| Box::pin(handler(ctx)));
        self.handlers.insert(task_type.to_owned(), handler);
        Ok(())
    }

    /// The handler for `task_type`, if registered.
    pub fn get(&self, task_type: &str) -> Option<Handler> {
        self.handlers.get(task_type).cloned()
    }

    /// True when `task_type` has a handler.
    pub fn contains(&self, task_type: &str) -> bool {
        self.handlers.contains_key(task_type)
    }

    /// The registered types, in no particular order.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

/// The registry with every handler Tasker ships: `sendWebhook`.
pub fn builtin_registry(webhook: webhook::WebhookSender) -> Result<Registry, RegistryError> {
    let mut registry = Registry::new();
    let webhook = Arc::new(webhook);
    registry.register(webhook::TASK_TYPE, move |ctx| {
        let webhook = Arc::clone(&webhook);
        async move { webhook.send(&ctx).await }
    })?;
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
