//! `tasker serve`: the HTTP API and the processor loop in one process, until Ctrl-C or SIGTERM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tasker::{Store, Tasker, api};
use tokio::sync::watch;

use crate::{CliError, ServeArgs, config};

/// How often `serve` runs cleanup.
const CLEANUP_EVERY: Duration = Duration::from_secs(24 * 3600);

pub async fn serve(args: ServeArgs) -> Result<(), CliError> {
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
        (config.cleanup_age(), config.sweep_entries),
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

/// Processes the queue every `interval` (at once when a task due now is created, and again while
/// full batches keep coming) and
/// cleans up once a day, until `stop` turns true; a run in progress always completes.
async fn process_loop(
    tasker: Arc<Tasker<Store>>,
    interval: Duration,
    (retention, sweep_entries): (Duration, u64),
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
            if let Err(err) = tasker.cleanup(retention, sweep_entries).await {
                tracing::error!(error = %err, "cleanup failed");
            }
            last_cleanup = Some(Instant::now());
        }
        if *stop.borrow() {
            return;
        }
        let backlog = summary.is_some_and(|s| s.claimed >= batch_size);
        if !backlog {
            // A task created due now wakes the loop at once: locally it starts within
            // milliseconds, not up to an interval later.
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(interval) => {}
                () = tasker.task_due_now() => {}
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
