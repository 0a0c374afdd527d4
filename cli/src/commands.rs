//! The command line: every command, and running one with the Tasker it needs (opened once).

use tasker::compose::TaskTypes;
use tasker::engine::MAX_LIST_LIMIT;
use tasker::runtime::{self, Invocation};
use tasker::store::ListFilter;
use tasker::store::dynamodb::{self, schema};
use tasker::{AnyStore, Config, Dispatch, StoreKind, TaskStatus, Tasker};

use crate::operator::{parse_id, print_task, print_task_waiting};
use crate::{CliError, OutputArgs, StoreArgs, create, operator, schedules, serve, worker};

#[derive(clap::Parser)]
#[command(
    name = "tasker",
    version,
    about = "Background tasks: schedule, run, retry, cancel, clean up"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Serve the HTTP API and process the queue in one process (Ctrl-C stops it cleanly).
    Serve(serve::ServeArgs),
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
    /// PostgreSQL: bring Tasker's schema in TASKER_DATABASE_URL up to date (what every process
    /// does at start unless TASKER_DATABASE_MIGRATE=never) and print its version.
    Migrate(StoreArgs),
    /// Create the DynamoDB table with the same schema as template.yaml.
    CreateTable {
        /// Table name.
        #[arg(long, env = "TASKER_TABLE")]
        table: String,
    },
}

impl Command {
    /// Where the command's tasks are; `None` for those that open no store of the usual kind.
    fn store(&self) -> Option<&StoreArgs> {
        match self {
            Self::Process(store) | Self::Move(store) | Self::Cleanup(store) => Some(store),
            Self::Sweep { store, .. }
            | Self::List { store, .. }
            | Self::Show { store, .. }
            | Self::Cancel { store, .. }
            | Self::Retry { store, .. }
            | Self::Stats { store, .. }
            | Self::Types { store, .. }
            | Self::Pause { store, .. }
            | Self::Resume { store, .. } => Some(store),
            Self::Create(args) => Some(&args.store),
            Self::Schedules(command) => Some(command.store()),
            Self::Serve(_) | Self::Worker(_) | Self::Migrate(_) | Self::CreateTable { .. } => None,
        }
    }
}

/// Runs `cli`'s command with `types`.
pub(crate) async fn run(cli: Cli, types: TaskTypes) -> Result<(), CliError> {
    let Some(store) = cli.command.store() else {
        return match cli.command {
            Command::Serve(args) => serve::serve(args, types).await,
            Command::Worker(args) => worker::worker(args, types).await,
            Command::Migrate(args) => migrate(&args).await,
            Command::CreateTable { table } => {
                let client = dynamodb::client_from_env().await;
                schema::create_table(&client, &table).await?;
                out!("created table {table}");
                Ok(())
            }
            _ => Err(CliError::Usage("this command needs a store".to_owned())),
        };
    };
    let (config, tasker) = crate::open(store, types).await?;
    run_with(cli.command, &config, &tasker).await
}

/// Runs `command` over `tasker`. Longer than most functions: one short arm per command, a
/// dispatch table that splitting would only scatter.
async fn run_with(
    command: Command,
    config: &Config,
    tasker: &Tasker<AnyStore>,
) -> Result<(), CliError> {
    match command {
        Command::Process(_) => one_pass(tasker, Dispatch::Poll).await,
        Command::Move(_) => one_pass(tasker, Dispatch::Sqs).await,
        Command::Cleanup(_) => {
            operator::cleanup(tasker, config.cleanup_age(), config.sweep_entries).await
        }
        Command::Sweep { entries, .. } => {
            let summary = tasker
                .sweep(entries.unwrap_or(config.sweep_entries))
                .await?;
            out!("{}", serde_json::to_string(&summary)?);
            Ok(())
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
            ..
        } => {
            let filter = ListFilter {
                status,
                task_type,
                reference_uid: reference,
                schedule,
            };
            let limit = usize::try_from(limit).unwrap_or(MAX_LIST_LIMIT);
            operator::list(tasker, &filter, limit, cursor, all, output.json).await
        }
        Command::Create(args) => create::create(tasker, args).await,
        Command::Show { id, output, .. } => {
            let (task, waiting) = tasker.get_waiting(parse_id(&id)?).await?;
            print_task_waiting(&task, waiting.as_ref(), output.json)
        }
        Command::Cancel {
            id,
            reference,
            task_type,
            output,
            ..
        } => operator::cancel(tasker, id, reference, task_type, output.json).await,
        Command::Retry {
            id,
            all_failed,
            task_type,
            output,
            ..
        } => match id {
            Some(id) if !all_failed => {
                print_task(&tasker.retry(parse_id(&id)?).await?, output.json)
            }
            _ => operator::retry_all_failed(tasker, task_type, output.json).await,
        },
        Command::Stats { output, .. } => operator::stats(tasker, output.json).await,
        Command::Types { output, .. } => operator::types(tasker, output.json).await,
        Command::Pause {
            task_type, output, ..
        } => operator::pause(tasker, &task_type, true, output.json).await,
        Command::Resume {
            task_type, output, ..
        } => operator::pause(tasker, &task_type, false, output.json).await,
        Command::Schedules(command) => schedules::run(command, tasker).await,
        Command::Serve(_)
        | Command::Worker(_)
        | Command::Migrate(_)
        | Command::CreateTable { .. } => Err(CliError::Usage(
            "this command opens its own store".to_owned(),
        )),
    }
}

/// One invocation of `dispatch` mode's work, as the processor function runs it: the due
/// schedules fire, then the queue runs once (`tasker process`) or the mover runs once
/// (`tasker move`); its counts are printed as JSON.
async fn one_pass(tasker: &Tasker<AnyStore>, dispatch: Dispatch) -> Result<(), CliError> {
    let summary = runtime::invoke(tasker, dispatch, Invocation::default()).await?;
    match summary.moved {
        Some(moved) => out!("{}", serde_json::to_string(&moved)?),
        None => out!("{}", serde_json::to_string(&summary.run)?),
    }
    Ok(())
}

/// `tasker migrate`: Tasker's PostgreSQL schema brought up to date; the other stores have no
/// such step, and say where theirs is.
async fn migrate(args: &StoreArgs) -> Result<(), CliError> {
    let config = crate::config(args)?;
    let url = match (config.store, config.database_url) {
        (StoreKind::Postgres, Some(url)) => url,
        (StoreKind::Postgres, None) => {
            return Err(CliError::Usage(
                "TASKER_DATABASE_URL (--database-url) is required".to_owned(),
            ));
        }
        (StoreKind::Sqlite, _) => {
            return Err(CliError::Usage(
                "tasker migrate is for TASKER_STORE=postgres: SQLite brings its file up to \
                 date when it opens it"
                    .to_owned(),
            ));
        }
        (StoreKind::DynamoDb, _) => {
            return Err(CliError::Usage(
                "tasker migrate is for TASKER_STORE=postgres: DynamoDB's table is made by \
                 `tasker create-table` or template.yaml"
                    .to_owned(),
            ));
        }
    };
    let migrated = tasker::store::postgres::PgStore::migrate(&url).await?;
    if migrated.from == migrated.to {
        out!("Tasker's schema is up to date (version {})", migrated.to);
    } else {
        out!(
            "Tasker's schema migrated from version {} to {}",
            migrated.from,
            migrated.to
        );
    }
    Ok(())
}

fn parse_status(text: &str) -> Result<TaskStatus, String> {
    text.parse()
        .map_err(|_| "expected pending, running, succeeded, failed or cancelled".to_owned())
}
