//! `tasker`: run Tasker on one machine (API + processor + cleanup), or one pass of each.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use tasker::store::dynamodb::schema;
use tasker::{Config, DynamoStore, Store, StoreKind, Tasker, api};
use tokio::sync::watch;

/// How often `serve` runs cleanup.
const CLEANUP_EVERY: Duration = Duration::from_secs(24 * 3600);

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
    /// Delete finished tasks older than TASKER_RETENTION and print the count as JSON.
    Cleanup(StoreArgs),
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
    /// Put a failed or cancelled task back in the queue, due now, with fresh attempts.
    Retry {
        /// Task id.
        id: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show the backlog: tasks due now and how long the oldest has waited.
    Stats {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Create the DynamoDB table with the same schema as template.yaml.
    CreateTable {
        /// Table name.
        #[arg(long, env = "TASKER_TABLE")]
        table: String,
    },
}

#[derive(Args)]
struct StoreArgs {
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
struct OutputArgs {
    /// Print JSON for scripts instead of text for people.
    #[arg(long)]
    json: bool,
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
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("cannot encode the output: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Usage(String),
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
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Process(args) => {
            let config = config(&args)?;
            let summary = config.build_tasker().await?.process_queue(None).await?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Cleanup(args) => {
            let config = config(&args)?;
            let summary = config
                .build_tasker()
                .await?
                .cleanup(config.retention)
                .await?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
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
            match (id, reference) {
                (Some(id), _) => print_task(&tasker.cancel(parse_id(&id)?).await?, output.json),
                (None, Some(reference)) => {
                    let ids = tasker
                        .cancel_by_reference(&reference, task_type.as_deref())
                        .await?;
                    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                    if output.json {
                        let body = serde_json::json!({"cancelled": ids.len(), "ids": ids});
                        println!("{body}");
                    } else {
                        println!("cancelled {} task(s)", ids.len());
                        for id in ids {
                            println!("  {id}");
                        }
                    }
                    Ok(())
                }
                (None, None) => Err(CliError::Usage("give a task id or --reference".into())),
            }
        }
        Command::Retry { id, output, store } => {
            let tasker = config(&store)?.build_tasker().await?;
            print_task(&tasker.retry(parse_id(&id)?).await?, output.json)
        }
        Command::Stats { output, store } => {
            let tasker = config(&store)?.build_tasker().await?;
            let backlog = tasker.backlog().await?;
            let now = tasker.now();
            let age = backlog
                .oldest_due_at
                .map(|oldest| (now.0 - oldest.0).whole_seconds().max(0));
            if output.json {
                let body = serde_json::json!({
                    "due": backlog.due,
                    "oldestDueAt": backlog.oldest_due_at,
                    "oldestDueAgeSeconds": age,
                });
                println!("{body}");
            } else {
                println!("due now:     {}", backlog.due);
                match (backlog.oldest_due_at, age) {
                    (Some(oldest), Some(age)) => {
                        println!("oldest due:  {oldest} ({age} s ago)");
                    }
                    _ => println!("oldest due:  -"),
                }
            }
            Ok(())
        }
        Command::CreateTable { table } => {
            let client = DynamoStore::client_from_env().await;
            schema::create_table(&client, &table).await?;
            println!("created table {table}");
            Ok(())
        }
    }
}

fn parse_id(id: &str) -> Result<tasker::TaskId, CliError> {
    id.parse()
        .map_err(|_| CliError::Usage(format!("{id:?} is not a task id (a 26-character ULID)")))
}

/// Prints a task as JSON, or as aligned `field: value` lines for people.
fn print_task(task: &tasker::Task, json: bool) -> Result<(), CliError> {
    let value = serde_json::to_value(task)?;
    if json {
        println!("{value}");
        return Ok(());
    }
    if let Some(fields) = value.as_object() {
        for (name, field) in fields {
            let text = match field {
                serde_json::Value::Null => "-".to_owned(),
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            println!("{name:<20} {text}");
        }
    }
    Ok(())
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

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let config = config(&args.store)?;
    let tasker = Arc::new(config.build_tasker().await?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|err| CliError::Listen(args.listen, err))?;
    let local = listener
        .local_addr()
        .map_err(|err| CliError::Listen(args.listen, err))?;
    let store = match tasker.store() {
        Store::Sqlite(_) => format!("sqlite {}", config.db_path.display()),
        Store::DynamoDb(store) => format!("dynamodb table {}", store.table()),
    };
    tracing::info!(address = %local, store = %store, interval_s = args.interval, "tasker listening on http://{local}");

    let (stop_tx, stop_rx) = watch::channel(false);
    let app = api::router(Arc::clone(&tasker), config.local_auth());
    let mut http_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|stop| *stop).await;
            })
            .await
    });
    let worker = tokio::spawn(process_loop(
        Arc::clone(&tasker),
        Duration::from_secs(args.interval),
        config.retention,
        config.processor.batch_size,
        stop_rx,
    ));

    shutdown_signal().await;
    tracing::info!("stopping: finishing the current run and open requests");
    let _ = stop_tx.send(true);
    let _ = worker.await;
    match server.await {
        Ok(result) => result.map_err(CliError::Serve)?,
        Err(join) => tracing::error!(error = %join, "HTTP server task failed"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Processes the queue every `interval` (at once again while full batches keep coming) and
/// cleans up once a day, until `stop` turns true; a run in progress always completes.
async fn process_loop(
    tasker: Arc<Tasker<Store>>,
    interval: Duration,
    retention: Duration,
    batch_size: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_cleanup: Option<Instant> = None;
    loop {
        let summary = match tasker.process_queue(None).await {
            Ok(summary) => Some(summary),
            Err(err) => {
                tracing::error!(error = %err, "processor run failed");
                None
            }
        };
        if last_cleanup.is_none_or(|at| at.elapsed() >= CLEANUP_EVERY) {
            if let Err(err) = tasker.cleanup(retention).await {
                tracing::error!(error = %err, "cleanup failed");
            }
            last_cleanup = Some(Instant::now());
        }
        if *stop.borrow() {
            return;
        }
        let backlog = summary.is_some_and(|s| s.claimed >= batch_size);
        if !backlog {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
