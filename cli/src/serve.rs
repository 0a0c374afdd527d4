//! `tasker serve`: the HTTP API and the processor loop in one process, until Ctrl-C or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

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
    let worker = tokio::spawn({
        let tasker = Arc::clone(&tasker);
        let mut stop = stop_rx.clone();
        let interval = Duration::from_secs(args.interval);
        async move {
            tasker
                .serve_queue(interval, async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                })
                .await
        }
    });
    let cleaner = tokio::spawn(cleanup_loop(
        Arc::clone(&tasker),
        (config.cleanup_age(), config.sweep_entries),
        stop_rx,
    ));

    shutdown_signal().await;
    tracing::info!("stopping: finishing the attempts in flight and open requests");
    let _ = stop_tx.send(true);
    let _ = worker.await;
    let _ = cleaner.await;
    match server.await {
        Ok(result) => result.map_err(CliError::Serve)?,
        Err(join) => tracing::error!(error = %join, "HTTP server task failed"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Cleans up at start and then once a day, until `stop` turns true; a cleanup in progress
/// completes. It runs beside the processor loop, which it never holds up.
async fn cleanup_loop(
    tasker: Arc<Tasker<Store>>,
    (retention, sweep_entries): (Duration, u64),
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if let Err(err) = tasker.cleanup(retention, sweep_entries).await {
            tracing::error!(error = %err, "cleanup failed");
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(CLEANUP_EVERY) => {}
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
