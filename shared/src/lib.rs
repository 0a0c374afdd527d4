//! Tasker: background tasks with scheduling, retries, cancellation and cleanup, stored in
//! DynamoDB (on Lambda) or an embedded SQLite file (on one machine).

pub mod api;
pub mod clock;
pub mod config;
pub mod metrics;
pub mod retry;
pub mod store;
pub mod task;
pub mod tasker;
pub mod tasks;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use config::StartupError;
pub use config::{AuthMode, Config, ConfigError, StoreKind};
pub use retry::RetryPolicy;
pub use store::{DynamoStore, SqliteStore, Store, StoreError};
pub use task::{NewTask, Task, TaskId, TaskStatus, ValidationError};
pub use tasker::{
    CleanupSummary, PollSettings, ProcessorSettings, RunSummary, Stats, Tasker, TaskerError,
};
pub use tasks::{Registry, RegistryError, TaskContext, TaskError};
