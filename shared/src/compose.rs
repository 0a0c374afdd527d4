//! The composition root: what a binary builds from its configuration and the task types it
//! runs. Only binaries call it (the Lambdas' `main`, the CLI, an application's own); nothing
//! else in the library imports it, so the configuration stays a leaf.

use crate::config::{Config, ConfigError};
use crate::engine::Tasker;
use crate::handlers::{Registry, RegistryError};
use crate::store::StoreError;

/// How a binary gets its task types: made from the configuration it read, once per process,
/// so the built-in ones take their settings (`TASKER_WEBHOOK_*`, `TASKER_RETRY_*`,
/// `TASKER_HANDLER_*`) from it. An application passes its own (see `docs/tasks.md`); the
/// shipped binaries pass [`builtin_types`].
pub type TaskTypes = fn(&Config) -> Result<Registry, RegistryError>;

/// Start-up failed: the configuration, the store or a task type.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A variable has a value Tasker cannot use.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// Opening the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A task handler could not be registered.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A task type's claims outlast what the configuration gives an attempt.
    #[error("configuration: {0}")]
    LeaseTooLong(#[from] crate::engine::LeaseTooLong),
}

/// The task types Tasker ships (`sendWebhook`), with the configured defaults.
#[cfg(feature = "webhook")]
pub fn builtin_types(config: &Config) -> Result<Registry, RegistryError> {
    let sender = crate::handlers::webhook::WebhookSender::new(config.webhook.clone());
    crate::handlers::builtin_registry(sender, config.task_defaults)
}

/// No task types: for what runs no handler (cleanup), so it links none.
pub fn no_types(config: &Config) -> Result<Registry, RegistryError> {
    Ok(Registry::with_defaults(config.task_defaults))
}

/// Opens the configured store (DynamoDB from the standard AWS environment).
#[cfg(any(feature = "sqlite", feature = "dynamodb", feature = "postgres"))]
pub async fn open_store(config: &Config) -> Result<crate::store::AnyStore, StoreError> {
    use crate::config::StoreKind;
    use crate::store::AnyStore;
    match config.store {
        #[cfg(feature = "sqlite")]
        StoreKind::Sqlite => Ok(AnyStore::Sqlite(crate::store::SqliteStore::open(
            &config.db_path,
        )?)),
        #[cfg(feature = "dynamodb")]
        StoreKind::DynamoDb => {
            let table = config
                .table
                .clone()
                .ok_or_else(|| StoreError::backend("TASKER_TABLE is required for DynamoDB"))?;
            let client = crate::store::dynamodb::client_from_env().await;
            Ok(AnyStore::DynamoDb(crate::store::DynamoStore::new(
                client,
                table,
                config.retention,
            )))
        }
        #[cfg(feature = "postgres")]
        StoreKind::Postgres => {
            let url = config.database_url.as_deref().ok_or_else(|| {
                StoreError::backend("TASKER_DATABASE_URL is required for PostgreSQL")
            })?;
            Ok(AnyStore::Postgres(
                crate::store::postgres::PgStore::open(
                    url,
                    config.database_pool,
                    config.database_migrate,
                )
                .await?,
            ))
        }
        // `Config::from_lookup` refuses a backend this binary lacks.
        #[allow(unreachable_patterns)]
        other => Err(StoreError::backend(format!(
            "this binary is built without the {} backend",
            other.as_str()
        ))),
    }
}

/// SQS mode's queue, when `TASKER_DISPATCH=sqs`.
#[cfg(feature = "sqs")]
pub async fn open_queue(config: &Config) -> Option<crate::push::sqs::SqsQueue> {
    match (config.dispatch, &config.queue_url) {
        (crate::config::Dispatch::Sqs, Some(url)) => {
            Some(crate::push::sqs::SqsQueue::from_env(url).await)
        }
        _ => None,
    }
}

/// Refuses SQS mode when a task type's claims last as long as the queue's visibility timeout
/// or longer: a message would come back while its task is still claimed, be dropped, and the
/// task would wait for the mover instead of its retry. A queue that cannot be asked is let
/// be, with a warning: the check is then the operator's.
#[cfg(feature = "sqs")]
pub async fn check_visibility<S>(
    tasker: &Tasker<S>,
    queue: &crate::push::sqs::SqsQueue,
) -> Result<(), StartupError> {
    let visibility = match queue.visibility_timeout().await {
        Ok(visibility) => visibility,
        Err(err) => {
            tracing::warn!(error = %crate::Report(&err), queue = queue.url(), "cannot read the queue's visibility timeout; not checking it against the task types' leases");
            return Ok(());
        }
    };
    tasker.check_leases_fit(
        visibility,
        true,
        || {
            format!(
                "the queue's VisibilityTimeout is {} s and must be longer",
                visibility.as_secs()
            )
        },
        "raise the queue's VisibilityTimeout (the template derives it from HandlerTimeout)",
    )?;
    Ok(())
}

/// Tasker over the configured store with `types`, sending to the queue in SQS mode.
#[cfg(any(feature = "sqlite", feature = "dynamodb", feature = "postgres"))]
pub async fn build_tasker(
    config: &Config,
    types: TaskTypes,
) -> Result<Tasker<crate::store::AnyStore>, StartupError> {
    // The task types first: a bad setting of theirs stops the start before the store opens.
    let registry = types(config)?;
    let tasker = Tasker::new(open_store(config).await?, registry, config.processor)
        .with_key_limits(config.key_limits.clone());
    #[cfg(feature = "sqs")]
    if let Some(queue) = open_queue(config).await {
        return Ok(tasker.with_push(std::sync::Arc::new(queue)));
    }
    Ok(tasker)
}

/// Tasker over an already opened `store` with `types` (no queue).
pub fn tasker_over<S>(
    config: &Config,
    store: S,
    types: TaskTypes,
) -> Result<Tasker<S>, StartupError> {
    Ok(Tasker::new(store, types(config)?, config.processor)
        .with_key_limits(config.key_limits.clone()))
}
