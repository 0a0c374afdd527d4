//! `tasker`: run Tasker on one machine (the API, the processor and cleanup in one process),
//! one pass of each, or the operator commands (list, show, cancel, retry, stats, schedules)
//! against SQLite, DynamoDB or PostgreSQL.
//!
//! The `tasker` binary is [`main`] with the built-in task types. An application that brings
//! its own task types runs the same commands with them: its binary's `main` calls
//! `tasker_cli::main(my_types)` (see `docs/tasks.md`).

/// `println!` that returns a [`CliError`] instead of panicking when stdout is closed.
macro_rules! out {
    ($($arg:tt)*) => {
        crate::output::write_line(format_args!($($arg)*))?
    };
}

mod commands;
mod create;
mod http;
mod operator;
mod output;
pub mod schedules;
mod serve;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser};
use tasker::compose::{self, TaskTypes};
use tasker::{AnyStore, Config, StoreKind, Tasker};

/// Runs the command line with `types`, the task types this binary registers; the exit code
/// says whether the command succeeded.
pub fn main(types: TaskTypes) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(commands::Cli::parse(), types)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader has what it wanted (`tasker list | head`): stop quietly.
        Err(err) if output::reader_gone(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Args)]
pub(crate) struct StoreArgs {
    /// Backend: sqlite (default), dynamodb or postgres [env: TASKER_STORE].
    #[arg(long, value_parser = ["sqlite", "dynamodb", "postgres"])]
    store: Option<String>,
    /// SQLite database file [env: TASKER_DB_PATH, default: ./tasker.db].
    #[arg(long)]
    db: Option<PathBuf>,
    /// DynamoDB table [env: TASKER_TABLE].
    #[arg(long)]
    table: Option<String>,
    /// PostgreSQL database, postgres://user@host:port/database [env: TASKER_DATABASE_URL].
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Args)]
pub(crate) struct OutputArgs {
    /// Print JSON for scripts instead of text for people.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error("configuration: {0}")]
    Config(#[from] tasker::ConfigError),
    #[error("{0}")]
    Startup(#[from] tasker::StartupError),
    #[error("{0}")]
    Tasker(#[from] tasker::TaskerError),
    #[error("{0}")]
    Store(#[from] tasker::StoreError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot encode the output: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write to standard output: {0}")]
    Output(std::io::Error),
}

/// The environment's configuration with the command-line flags on top.
pub(crate) fn config(args: &StoreArgs) -> Result<Config, CliError> {
    let mut config = Config::from_lookup(|name| match name {
        "TASKER_STORE" => args.store.clone().or_else(|| std::env::var(name).ok()),
        "TASKER_DB_PATH" => args
            .db
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| std::env::var(name).ok()),
        "TASKER_TABLE" => args.table.clone().or_else(|| std::env::var(name).ok()),
        "TASKER_DATABASE_URL" => args
            .database_url
            .clone()
            .or_else(|| std::env::var(name).ok()),
        _ => std::env::var(name).ok(),
    })?;
    if config.store == StoreKind::Sqlite {
        config.table = None;
    }
    Ok(config)
}

/// The configuration `args` and the environment make, and Tasker over its store with `types`
/// (and the queue in SQS mode): once per command.
async fn open(args: &StoreArgs, types: TaskTypes) -> Result<(Config, Tasker<AnyStore>), CliError> {
    let config = config(args)?;
    let tasker = compose::build_tasker(&config, types).await?;
    Ok((config, tasker))
}
