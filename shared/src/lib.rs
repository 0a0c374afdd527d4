//! Tasker: background tasks with scheduling, retries, cancellation and cleanup, stored in
//! DynamoDB (on Lambda) or an embedded SQLite file (on one machine).
//!
//! Cargo features choose what a binary links: `dynamodb` and `sqlite` (the backends), `api`
//! (the HTTP API), `webhook` (the `sendWebhook` task type), `lambda` (errors at the Lambda
//! edge) and `testing` (the store conformance suite and the benchmark's probes).

#[cfg(feature = "api")]
pub mod api;
pub mod clock;
pub mod compose;
pub mod config;
#[cfg(feature = "dashboard")]
pub mod dashboard;
pub mod engine;
pub mod handlers;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod metrics;
pub mod push;
pub mod report;
pub mod retry;
pub mod runtime;
pub mod schedule;
pub mod store;
pub mod task;

#[cfg(feature = "api")]
pub use api::auth::AuthMode;
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use compose::StartupError;
pub use config::{Config, ConfigError, Dispatch, StoreKind};
pub use engine::{
    CleanupSummary, PollSettings, ProcessorSettings, RunSummary, Stats, Tasker, TaskerError,
};
pub use handlers::{Registry, RegistryError, TaskContext, TaskError};
pub use report::Report;
pub use retry::{RetryPolicy, RetryPolicyError};
#[cfg(any(feature = "sqlite", feature = "dynamodb", feature = "postgres"))]
pub use store::AnyStore;
#[cfg(feature = "dynamodb")]
pub use store::DynamoStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{Store, StoreError};
pub use task::{NewTask, Task, TaskId, TaskStatus, ValidationError};
