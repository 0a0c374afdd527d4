//! Every environment variable Tasker reads, parsed once at start-up with documented defaults,
//! into the settings types of what they configure. Only the binaries and the composition root
//! ([`crate::compose`]) read it.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[cfg(feature = "api")]
use crate::api::auth::AuthMode;
use crate::engine::{PollSettings, ProcessorSettings};
use crate::handlers::TypeSettings;
use crate::handlers::webhook::WebhookSettings;
use crate::retry::{RetryPolicy, RetryPolicyError};
use crate::store::KeyLimits;

mod dispatch;
pub use dispatch::Dispatch;

/// Which backend holds the tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Embedded SQLite file (`TASKER_DB_PATH`).
    Sqlite,
    /// DynamoDB table (`TASKER_TABLE`).
    DynamoDb,
    /// PostgreSQL database (`TASKER_DATABASE_URL`).
    Postgres,
}

impl StoreKind {
    /// The name `TASKER_STORE` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::DynamoDb => "dynamodb",
            Self::Postgres => "postgres",
        }
    }

    /// True when this binary has the backend (its cargo feature is on).
    pub fn is_built(self) -> bool {
        match self {
            Self::Sqlite => cfg!(feature = "sqlite"),
            Self::DynamoDb => cfg!(feature = "dynamodb"),
            Self::Postgres => cfg!(feature = "postgres"),
        }
    }
}

impl FromStr for StoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sqlite" => Ok(Self::Sqlite),
            "dynamodb" => Ok(Self::DynamoDb),
            "postgres" => Ok(Self::Postgres),
            other => Err(format!(
                "expected sqlite, dynamodb or postgres, got {other:?}"
            )),
        }
    }
}

/// A variable has a value Tasker cannot use.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct ConfigError {
    /// The environment variable.
    pub name: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `TASKER_STORE`: `sqlite` (default), `dynamodb` or `postgres`.
    pub store: StoreKind,
    /// `TASKER_DISPATCH`: `poll` (default) or `sqs`.
    pub dispatch: Dispatch,
    /// `TASKER_QUEUE_URL`: SQS mode's queue.
    pub queue_url: Option<String>,
    /// `TASKER_DB_PATH`: SQLite file, default `./tasker.db`.
    pub db_path: PathBuf,
    /// `TASKER_TABLE`: DynamoDB table, required with `dynamodb`.
    pub table: Option<String>,
    /// `TASKER_DATABASE_URL`: the PostgreSQL database, required with `postgres`.
    pub database_url: Option<String>,
    /// `TASKER_DATABASE_POOL` (1–100, default 10): connections a process opens at most.
    pub database_pool: usize,
    /// `TASKER_DATABASE_MIGRATE` (`start`, the default, or `never`): whether a process brings
    /// Tasker's PostgreSQL schema up to date when it starts, or only checks it (`tasker
    /// migrate` applies it, for a database user without the right to change the schema).
    pub database_migrate: bool,
    /// `TASKER_BATCH_SIZE` (1–1000, default 100), `TASKER_CONCURRENCY` (1–256, default 16),
    /// `TASKER_MAX_RUN` (default 5m), `TASKER_TIME_MARGIN` (default 10s),
    /// `TASKER_LEASE_GRACE` (default 30s).
    pub processor: ProcessorSettings,
    /// Settings of the built-in task types: `TASKER_HANDLER_TIMEOUT` (default 30s),
    /// `TASKER_HANDLER_CONCURRENCY` (per process; default 0: no cap but `TASKER_CONCURRENCY`),
    /// `TASKER_RETRY_INITIAL` (30s), `TASKER_RETRY_FACTOR` (2), `TASKER_RETRY_MAX` (1h),
    /// `TASKER_RETRY_MIN` (0s).
    pub task_defaults: TypeSettings,
    /// `TASKER_POLL_WINDOW` (seconds, default 0: off) and `TASKER_POLL_INTERVAL` (seconds,
    /// default 1): how long one processor invocation keeps polling, and how often.
    pub poll: PollSettings,
    /// `TASKER_SERVICE`: the `Service` dimension of the processor's metrics (default `tasker`).
    pub service: String,
    /// `TASKER_RETENTION`: finished tasks older than this are deleted by cleanup (default
    /// `24h`, so a task that just ran can still be read after a restart); on DynamoDB also
    /// their TTL.
    pub retention: Duration,
    /// `TASKER_CLEANUP_GRACE` (default `0s`): how much longer cleanup leaves finished tasks to
    /// DynamoDB's TTL, whose deletes are free, before deleting them itself (2 write units each).
    pub cleanup_grace: Duration,
    /// `TASKER_SWEEP_ENTRIES` (default 100,000; 0 turns the sweep off): how many due-queue
    /// entries below the watermarks one cleanup run's sweep reads at most (each costs half a
    /// read unit for its item).
    pub sweep_entries: u64,
    /// `TASKER_API_TOKEN`, or the contents of the file `TASKER_API_TOKEN_FILE` names (systemd
    /// credentials, Docker secrets): bearer token for the HTTP API.
    pub api_token: Option<String>,
    /// `TASKER_ALLOWED_HOSTS`: comma-separated `Host` names `tasker serve` answers besides the
    /// loopback ones (`*`: any); `tasker serve --allowed-host` adds to them.
    pub allowed_hosts: Vec<String>,
    /// `TASKER_DASHBOARD` (default false): the enqueue Lambda serves the web dashboard at
    /// `/ui/` (`tasker serve` always does).
    pub dashboard: bool,
    /// `TASKER_AUTH`: `token` (default) or `iam`.
    pub iam_auth: bool,
    /// `TASKER_WEBHOOK_SECRET`, `TASKER_WEBHOOK_TIMEOUT` (default 10s),
    /// `TASKER_WEBHOOK_ALLOW_PRIVATE` (default false), `TASKER_WEBHOOK_BREAKER` (how long a
    /// host's circuit stays open; unset: no breaker).
    pub webhook: WebhookSettings,
    /// `TASKER_KEY_LIMITS`: limits per `concurrencyKey` and `rateKey`, a JSON array of rules
    /// (docs/limits.md); none by default. Concurrency on SQLite and PostgreSQL only; rates on
    /// every store (DynamoDB in poll mode).
    pub key_limits: std::sync::Arc<KeyLimits>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (tests pass a map); a blank value counts as unset, but
    /// for the token's two variables: a blank one stops the start-up, since running open may
    /// not be what a token left empty by mistake meant (an empty token file does the same).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        for name in ["TASKER_API_TOKEN", "TASKER_API_TOKEN_FILE"] {
            if lookup(name).is_some_and(|value| value.trim().is_empty()) {
                return Err(ConfigError {
                    name,
                    reason: "is set but blank; give a token, or unset it to run without one".into(),
                });
            }
        }
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let (dispatch, queue_url) = dispatch::dispatch(&get)?;
        let config = Self {
            dispatch,
            queue_url,
            store: parse(&get, "TASKER_STORE", StoreKind::Sqlite, str::parse)?,
            db_path: get("TASKER_DB_PATH")
                .map_or_else(|| PathBuf::from("tasker.db"), PathBuf::from),
            table: get("TASKER_TABLE"),
            database_url: get("TASKER_DATABASE_URL"),
            database_pool: parse(&get, "TASKER_DATABASE_POOL", 10, |v| bounded(v, 1, 100))?,
            database_migrate: parse(&get, "TASKER_DATABASE_MIGRATE", true, |v| match v {
                "start" => Ok(true),
                "never" => Ok(false),
                other => Err(format!("expected start or never, got {other:?}")),
            })?,
            processor: processor_settings(&get)?,
            task_defaults: task_defaults(&get)?,
            poll: poll_settings(&get)?,
            service: get("TASKER_SERVICE").unwrap_or_else(|| "tasker".to_owned()),
            retention: parse(&get, "TASKER_RETENTION", DEFAULT_RETENTION, duration)?,
            cleanup_grace: parse(&get, "TASKER_CLEANUP_GRACE", Duration::ZERO, duration)?,
            sweep_entries: parse(&get, "TASKER_SWEEP_ENTRIES", DEFAULT_SWEEP_ENTRIES, |v| {
                bounded(v, 0, 10_000_000).map(|n| n as u64)
            })?,
            api_token: api_token(&get)?,
            dashboard: parse(&get, "TASKER_DASHBOARD", false, boolean)?,
            allowed_hosts: get("TASKER_ALLOWED_HOSTS")
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|name| !name.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            iam_auth: parse(&get, "TASKER_AUTH", false, |v| match v {
                "iam" => Ok(true),
                "token" => Ok(false),
                other => Err(format!("expected token or iam, got {other:?}")),
            })?,
            webhook: WebhookSettings {
                secret: get("TASKER_WEBHOOK_SECRET"),
                timeout: parse(
                    &get,
                    "TASKER_WEBHOOK_TIMEOUT",
                    Duration::from_secs(10),
                    duration,
                )?,
                allow_private: parse(&get, "TASKER_WEBHOOK_ALLOW_PRIVATE", false, boolean)?,
                breaker: parse(&get, "TASKER_WEBHOOK_BREAKER", None, |v| {
                    duration(v).map(Some)
                })?,
            },
            key_limits: std::sync::Arc::new(parse(
                &get,
                "TASKER_KEY_LIMITS",
                KeyLimits::default(),
                |v| KeyLimits::parse(v).map_err(|err| err.to_string()),
            )?),
        };
        config.check_store()?;
        Ok(config)
    }

    /// The backend is built into this binary and has what it needs.
    fn check_store(&self) -> Result<(), ConfigError> {
        if !self.store.is_built() {
            return Err(ConfigError {
                name: "TASKER_STORE",
                reason: format!(
                    "this binary is built without the {} backend (cargo feature `{}`); \
                     the Lambda functions need TASKER_STORE=dynamodb",
                    self.store.as_str(),
                    self.store.as_str()
                ),
            });
        }
        if self.store == StoreKind::Postgres && self.database_url.is_none() {
            return Err(ConfigError {
                name: "TASKER_DATABASE_URL",
                reason:
                    "is required when TASKER_STORE=postgres (postgres://user@host:port/database)"
                        .into(),
            });
        }
        if self.store == StoreKind::DynamoDb && self.table.is_none() {
            return Err(ConfigError {
                name: "TASKER_TABLE",
                reason: "is required when TASKER_STORE=dynamodb".into(),
            });
        }
        Ok(())
    }

    /// The age past which cleanup deletes a finished task: the retention plus the TTL grace.
    pub fn cleanup_age(&self) -> Duration {
        self.retention.saturating_add(self.cleanup_grace)
    }

    #[cfg(feature = "api")]
    /// The auth mode of the API in Lambda: fails closed when neither a token nor IAM is set.
    pub fn lambda_auth(&self) -> AuthMode {
        match (&self.api_token, self.iam_auth) {
            (_, true) => AuthMode::Iam,
            (Some(token), false) => AuthMode::Token(token.clone()),
            (None, false) => AuthMode::Deny(
                "neither TASKER_API_TOKEN nor TASKER_AUTH=iam is configured; refusing every request"
                    .into(),
            ),
        }
    }

    #[cfg(feature = "api")]
    /// The auth mode of `tasker serve`: open without a token.
    pub fn local_auth(&self) -> AuthMode {
        match &self.api_token {
            Some(token) => AuthMode::Token(token.clone()),
            None => AuthMode::Open,
        }
    }
}

/// The retry settings' error, naming the variables at fault.
fn retry_error(err: RetryPolicyError) -> ConfigError {
    match err {
        RetryPolicyError::Factor(_) => ConfigError {
            name: "TASKER_RETRY_FACTOR",
            reason: err.to_string(),
        },
        RetryPolicyError::InitialAboveMax { initial_ms, max_ms } => ConfigError {
            name: "TASKER_RETRY_INITIAL",
            reason: format!(
                "{} must not exceed TASKER_RETRY_MAX ({})",
                humantime::format_duration(Duration::from_millis(initial_ms)),
                humantime::format_duration(Duration::from_millis(max_ms))
            ),
        },
    }
}

/// A variable's value, `None` when unset or blank.
type Get<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// `TASKER_API_TOKEN`, or the file `TASKER_API_TOKEN_FILE` names. A file that cannot be read or
/// holds no token stops the start-up (fail closed), as does setting both.
fn api_token(get: &Get<'_>) -> Result<Option<String>, ConfigError> {
    const FILE: &str = "TASKER_API_TOKEN_FILE";
    let error = |reason: String| ConfigError { name: FILE, reason };
    match (get("TASKER_API_TOKEN"), get(FILE)) {
        (Some(_), Some(_)) => Err(error(
            "is set together with TASKER_API_TOKEN; set one of them".to_owned(),
        )),
        // A client's token is read without surrounding spaces, so the configured one is too.
        (token, None) => Ok(token.map(|token| token.trim().to_owned())),
        (None, Some(path)) => {
            let path = path.trim();
            let text = std::fs::read_to_string(path)
                .map_err(|err| error(format!("cannot read {path:?}: {err}")))?;
            // Secret files usually end with a newline that is not part of the token.
            let token = text.trim();
            if token.is_empty() {
                return Err(error(format!("{path:?} holds no token")));
            }
            Ok(Some(token.to_owned()))
        }
    }
}

/// `TASKER_BATCH_SIZE`, `TASKER_CONCURRENCY`, `TASKER_MAX_RUN`, `TASKER_TIME_MARGIN`,
/// `TASKER_LEASE_GRACE`.
fn processor_settings(get: &Get<'_>) -> Result<ProcessorSettings, ConfigError> {
    let defaults = ProcessorSettings::default();
    Ok(ProcessorSettings {
        batch_size: parse(get, "TASKER_BATCH_SIZE", defaults.batch_size, |v| {
            bounded(v, 1, 1000)
        })?,
        concurrency: parse(get, "TASKER_CONCURRENCY", defaults.concurrency, |v| {
            bounded(v, 1, 256)
        })?,
        max_run: parse(get, "TASKER_MAX_RUN", defaults.max_run, duration)?,
        time_margin: parse(get, "TASKER_TIME_MARGIN", defaults.time_margin, duration)?,
        lease_grace: parse(get, "TASKER_LEASE_GRACE", defaults.lease_grace, duration)?,
    })
}

/// The built-in types' settings: `TASKER_RETRY_*`, `TASKER_HANDLER_TIMEOUT` and
/// `TASKER_HANDLER_CONCURRENCY`.
fn task_defaults(get: &Get<'_>) -> Result<TypeSettings, ConfigError> {
    let base = TypeSettings::default();
    let retry = RetryPolicy {
        initial_interval_ms: parse(
            get,
            "TASKER_RETRY_INITIAL",
            base.retry.initial_interval_ms,
            millis,
        )?,
        factor: parse(get, "TASKER_RETRY_FACTOR", base.retry.factor, |v| {
            v.parse::<f64>()
                .map_err(|_| format!("expected a number such as 2, got {v:?}"))
        })?,
        max_interval_ms: parse(get, "TASKER_RETRY_MAX", base.retry.max_interval_ms, millis)?,
        min_interval_ms: parse(get, "TASKER_RETRY_MIN", base.retry.min_interval_ms, millis)?,
    };
    retry.validate().map_err(retry_error)?;
    Ok(TypeSettings {
        max_attempts: base.max_attempts,
        retry,
        timeout: parse(get, "TASKER_HANDLER_TIMEOUT", base.timeout, duration)?,
        concurrency: parse(get, "TASKER_HANDLER_CONCURRENCY", None, |v| {
            match v.parse::<usize>() {
                Ok(0) => Ok(None),
                Ok(n) if n <= 256 => Ok(Some(n)),
                _ => Err(format!("expected 0 (no cap) to 256, got {v:?}")),
            }
        })?,
    })
}

/// `TASKER_POLL_WINDOW` (at most 14 min) and `TASKER_POLL_INTERVAL` (at least 100 ms).
fn poll_settings(get: &Get<'_>) -> Result<PollSettings, ConfigError> {
    Ok(PollSettings {
        window: parse(get, "TASKER_POLL_WINDOW", Duration::ZERO, |v| {
            seconds(v).and_then(|d| {
                if d > MAX_POLL_WINDOW {
                    Err(format!("must be at most {} s", MAX_POLL_WINDOW.as_secs()))
                } else {
                    Ok(d)
                }
            })
        })?,
        interval: parse(get, "TASKER_POLL_INTERVAL", Duration::from_secs(1), |v| {
            seconds(v).and_then(|d| {
                if d < MIN_POLL_INTERVAL {
                    Err(format!(
                        "must be at least {} ms",
                        MIN_POLL_INTERVAL.as_millis()
                    ))
                } else {
                    Ok(d)
                }
            })
        })?,
    })
}

fn parse<T>(
    get: &Get<'_>,
    name: &'static str,
    default: T,
    convert: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match get(name) {
        None => Ok(default),
        Some(value) => convert(value.trim()).map_err(|reason| ConfigError { name, reason }),
    }
}

fn bounded(value: &str, min: usize, max: usize) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a whole number from {min} to {max}, got {value:?}"
        )),
    }
}

fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|err| format!("expected a duration such as 30s or 1h, got {value:?}: {err}"))
}

/// Whole or fractional seconds (`2`, `0.5`), or a duration with a unit (`500ms`, `1m`).
fn seconds(value: &str) -> Result<Duration, String> {
    match value.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::try_from_secs_f64(secs)
            .map_err(|err| format!("{value:?} is not a usable number of seconds: {err}")),
        Ok(_) => Err(format!("expected a number of seconds, got {value:?}")),
        Err(_) => duration(value),
    }
}

/// Due-queue entries one cleanup run sweeps by default: about 50,000 read units, a minute or
/// two of a cleanup invocation.
const DEFAULT_SWEEP_ENTRIES: u64 = 100_000;
/// How long finished tasks are kept by default: a day, as River keeps completed jobs.
const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Longest poll window: a Lambda invocation lasts at most 15 minutes.
const MAX_POLL_WINDOW: Duration = Duration::from_secs(14 * 60);
/// Shortest poll interval: each poll reads the due queues once.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

fn millis(value: &str) -> Result<u64, String> {
    duration(value).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn boolean(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("expected true or false, got {value:?}")),
    }
}

#[cfg(test)]
mod tests;
