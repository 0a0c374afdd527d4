//! `tasker`: run Tasker on one machine (API + processor + cleanup), one pass of each, or the
//! operator commands (list, show, cancel, retry, stats, schedules) against SQLite or
//! DynamoDB.

/// `println!` that returns a [`CliError`] instead of panicking when stdout is closed.
macro_rules! out {
    ($($arg:tt)*) => {
        crate::output::write_line(format_args!($($arg)*))?
    };
}

mod create;
mod http;
mod operator;
mod output;
mod schedules;
mod serve;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tasker::store::ListFilter;
use tasker::store::dynamodb::{self, schema};
use tasker::{Config, StoreKind, TaskStatus};

use crate::operator::{parse_id, print_task};

#[derive(Parser)]
#[command(
    name = "tasker",
    version,
    about = "Background tasks: schedule, run, retry, cancel, clean up"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API and process the queue in one process (Ctrl-C stops it cleanly).
    Serve(ServeArgs),
    /// Run one processQueue pass and print its summary as JSON.
    Process(StoreArgs),
    /// SQS mode: read the queue and run the tasks its messages name, until Ctrl-C or SIGTERM
    /// (the worker Lambda's code, on one machine); print the counts as JSON at the end.
    Worker(worker::WorkerArgs),
    /// SQS mode: one run of the mover (send messages for tasks falling due within 15 minutes
    /// that have none on their way); print its counts as JSON. Needs TASKER_DISPATCH=sqs.
    Move(StoreArgs),
    /// Delete finished tasks older than TASKER_RETENTION, sweep below the due queue's
    /// watermarks, and print the counts as JSON.
    Cleanup(StoreArgs),
    /// Only sweep: read the due queue below its watermarks (DynamoDB) and make every task
    /// found there still due again; print the counts as JSON.
    Sweep {
        /// Entries to read at most (default TASKER_SWEEP_ENTRIES).
        #[arg(long)]
        entries: Option<u64>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List tasks, newest first (scheduled instant; finish once failed or cancelled).
    List {
        /// Only tasks in this status.
        #[arg(long, value_parser = parse_status)]
        status: Option<TaskStatus>,
        /// Only tasks of this type.
        #[arg(long = "type")]
        task_type: Option<String>,
        /// Only tasks with this referenceUid.
        #[arg(long)]
        reference: Option<String>,
        /// Only tasks created by this schedule's ticks.
        #[arg(long)]
        schedule: Option<String>,
        /// Tasks per page.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100))]
        limit: u64,
        /// Start after this cursor (printed under the previous page).
        #[arg(long)]
        cursor: Option<String>,
        /// Every page, not just the first.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Create a task, as POST /tasks does (same rules; printed as `show` prints it).
    Create(create::CreateArgs),
    /// Show one task.
    Show {
        /// Task id.
        id: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Cancel a pending task, or every pending task with a reference.
    Cancel {
        /// Task id.
        #[arg(required_unless_present = "reference", conflicts_with = "reference")]
        id: Option<String>,
        /// Cancel every pending task with this referenceUid instead.
        #[arg(long)]
        reference: Option<String>,
        /// With --reference: only tasks of this type.
        #[arg(long = "type", requires = "reference")]
        task_type: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Put a failed or cancelled task back in the queue, due now, with fresh attempts; or
    /// every failed task with --all-failed.
    Retry {
        /// Task id.
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        id: Option<String>,
        /// Retry every failed task (with a progress bar).
        #[arg(long)]
        all_failed: bool,
        /// With --all-failed: only tasks of this type.
        #[arg(long = "type", requires = "all_failed")]
        task_type: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show tasks per status and the backlog (tasks due now, how long the oldest has waited).
    Stats {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show each registered task type: paused or running, its tasks due and running now, its
    /// concurrency cap and timeout.
    Types {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Pause a task type: its tasks stay pending, and no processor claims them (within 5 s)
    /// until it is resumed; creates still succeed.
    Pause {
        /// The task type.
        #[arg(value_name = "TYPE")]
        task_type: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Resume a paused task type.
    Resume {
        /// The task type.
        #[arg(value_name = "TYPE")]
        task_type: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Recurring tasks: list, show, add, rm, pause, resume, trigger, apply FILE.
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// Create the DynamoDB table with the same schema as template.yaml.
    CreateTable {
        /// Table name.
        #[arg(long, env = "TASKER_TABLE")]
        table: String,
    },
}

#[derive(Args)]
pub(crate) struct StoreArgs {
    /// Backend: sqlite (default) or dynamodb [env: TASKER_STORE].
    #[arg(long, value_parser = ["sqlite", "dynamodb"])]
    store: Option<String>,
    /// SQLite database file [env: TASKER_DB_PATH, default: ./tasker.db].
    #[arg(long)]
    db: Option<PathBuf>,
    /// DynamoDB table [env: TASKER_TABLE].
    #[arg(long)]
    table: Option<String>,
}

#[derive(Args)]
pub(crate) struct OutputArgs {
    /// Print JSON for scripts instead of text for people.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Seconds between processQueue runs.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval: u64,
    /// A Host name to answer besides the loopback ones (repeatable; `*` for any); required
    /// when listening beyond loopback [env: TASKER_ALLOWED_HOSTS, comma-separated].
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_hosts: Vec<String>,
    /// Serve beyond loopback without TASKER_API_TOKEN (the API is then open to anyone who can
    /// reach it; logged as a warning).
    #[arg(long)]
    insecure_no_auth: bool,
    /// Most connections open at once; more wait until one closes.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65536))]
    max_connections: u64,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
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

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        // The reader has what it wanted (`tasker list | head`): stop quietly.
        Err(err) if output::reader_gone(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve::serve(args).await,
        Command::Worker(args) => worker::worker(args).await,
        Command::Move(args) => worker::move_once(args).await,
        Command::Process(args) => {
            let config = config(&args)?;
            let tasker = config.build_tasker().await?;
            fire_once(&tasker).await;
            let summary = tasker.process_queue(None).await?;
            out!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Cleanup(args) => {
            let config = config(&args)?;
            let tasker = config.build_tasker().await?;
            operator::cleanup(&tasker, config.cleanup_age(), config.sweep_entries).await
        }
        Command::List {
            status,
            task_type,
            reference,
            schedule,
            limit,
            cursor,
            all,
            output,
            store,
        } => {
            let tasker = config(&store)?.build_tasker().await?;
            let filter = ListFilter {
                status,
                task_type,
                reference_uid: reference,
                schedule,
            };
            let limit = usize::try_from(limit).unwrap_or(20);
            operator::list(&tasker, &filter, limit, cursor, all, output.json).await
        }
        Command::Create(args) => {
            let tasker = config(&args.store)?.build_tasker().await?;
            create::create(&tasker, args).await
        }
        Command::Show { id, output, store } => {
            let tasker = config(&store)?.build_tasker().await?;
            let task = tasker.get(parse_id(&id)?).await?;
            print_task(&task, output.json)
        }
        Command::Cancel {
            id,
            reference,
            task_type,
            output,
            store,
        } => {
            let tasker = config(&store)?.build_tasker().await?;
            operator::cancel(&tasker, id, reference, task_type, output.json).await
        }
        Command::Retry {
            id,
            all_failed,
            task_type,
            output,
            store,
        } => {
            let tasker = config(&store)?.build_tasker().await?;
            match id {
                Some(id) if !all_failed => {
                    print_task(&tasker.retry(parse_id(&id)?).await?, output.json)
                }
                _ => operator::retry_all_failed(&tasker, task_type, output.json).await,
            }
        }
        Command::Sweep { entries, store } => {
            let config = config(&store)?;
            let tasker = config.build_tasker().await?;
            let summary = tasker
                .sweep(entries.unwrap_or(config.sweep_entries))
                .await?;
            out!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Stats { output, store } => {
            let tasker = config(&store)?.build_tasker().await?;
            operator::stats(&tasker, output.json).await
        }
        Command::Types { output, store } => {
            let tasker = config(&store)?.build_tasker().await?;
            operator::types(&tasker, output.json).await
        }
        Command::Pause {
            task_type,
            output,
            store,
        } => {
            let tasker = config(&store)?.build_tasker().await?;
            operator::pause(&tasker, &task_type, true, output.json).await
        }
        Command::Resume {
            task_type,
            output,
            store,
        } => {
            let tasker = config(&store)?.build_tasker().await?;
            operator::pause(&tasker, &task_type, false, output.json).await
        }
        Command::Schedules(command) => schedules::run(command).await,
        Command::CreateTable { table } => {
            let client = dynamodb::client_from_env().await;
            schema::create_table(&client, &table).await?;
            out!("created table {table}");
            Ok(())
        }
    }
}

/// Fires the due schedules before a one-off run; a failure is logged, and the run goes on.
pub(crate) async fn fire_once(tasker: &tasker::Tasker<tasker::Store>) {
    if let Err(err) = tasker.fire_schedules().await {
        tracing::warn!(error = %tasker::Report(&err), "could not fire the due schedules");
    }
}

fn parse_status(text: &str) -> Result<TaskStatus, String> {
    text.parse()
        .map_err(|_| "expected pending, running, succeeded, failed or cancelled".to_owned())
}

/// The environment's configuration with the command-line flags on top.
fn config(args: &StoreArgs) -> Result<Config, CliError> {
    let mut config = Config::from_lookup(|name| match name {
        "TASKER_STORE" => args.store.clone().or_else(|| std::env::var(name).ok()),
        "TASKER_DB_PATH" => args
            .db
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| std::env::var(name).ok()),
        "TASKER_TABLE" => args.table.clone().or_else(|| std::env::var(name).ok()),
        _ => std::env::var(name).ok(),
    })?;
    if config.store == StoreKind::Sqlite {
        config.table = None;
    }
    Ok(config)
}
