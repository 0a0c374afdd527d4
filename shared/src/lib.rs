//! Tasker: background tasks with scheduling, retries, cancellation and cleanup, stored in
//! DynamoDB (on Lambda) or an embedded SQLite file (on one machine).
//!
//! Cargo features choose what a binary links: `dynamodb` and `sqlite` (the backends), `api`
//! (the HTTP API), `webhook` (the `sendWebhook` task type), `lambda` (errors at the Lambda
//! edge) and `testing` (the store conformance suite and the benchmark's probes).

#[cfg(feature = "api")]
pub mod api;
pub mod clock;
pub mod config;
#[cfg(feature = "dashboard")]
pub mod dashboard;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod metrics;
pub mod push;
pub mod report;
pub mod retry;
pub mod schedule;
pub mod store;
pub mod task;
pub mod tasker;
pub mod tasks;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use config::{AuthMode, Config, ConfigError, Dispatch, StartupError, StoreKind};
pub use report::Report;
pub use retry::{RetryPolicy, RetryPolicyError};
#[cfg(feature = "dynamodb")]
pub use store::DynamoStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
#[cfg(any(feature = "sqlite", feature = "dynamodb"))]
pub use store::Store;
pub use store::StoreError;
pub use task::{NewTask, Task, TaskId, TaskStatus, ValidationError};
pub use tasker::{
    CleanupSummary, PollSettings, ProcessorSettings, RunSummary, Stats, Tasker, TaskerError,
};
pub use tasks::{Registry, RegistryError, TaskContext, TaskError};
