//! `tasker serve`: the HTTP API and the processor loop in one process, until Ctrl-C or SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use tasker::api::hosts::{self, HostAllowlist};
use tasker::{Config, Store, Tasker, api};
use tokio::sync::watch;

use crate::{CliError, ServeArgs, config};

/// How often `serve` runs cleanup.
const CLEANUP_EVERY: Duration = Duration::from_secs(24 * 3600);

pub async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let config = config(&args.store)?;
    let open_to_network = exposure(&args, &config)?;
    let mut names = config.allowed_hosts.clone();
    names.extend(args.allowed_hosts.iter().cloned());
    let allowlist = HostAllowlist::for_bind(args.listen, &names)
        .map_err(|err| CliError::Usage(err.to_string()))?;
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
    tracing::info!(address = %local, store = %store, interval_s = args.interval, hosts = ?allowlist, "tasker listening on http://{local}");

    let (stop_tx, stop_rx) = watch::channel(false);
    let auth = config.local_auth();
    let api = api::router(Arc::clone(&tasker), auth.clone());
    let mut app = tasker::dashboard::beside(api, Arc::clone(&tasker), auth, true).layer(
        middleware::from_fn_with_state(Arc::new(allowlist), hosts::require_allowed_host),
    );
    if open_to_network {
        tracing::warn!(address = %local, "serving the API to the network WITHOUT A TOKEN (--insecure-no-auth): anyone who can reach {local} can read, create and cancel tasks");
        app = app.layer(middleware::from_fn(remind_open));
    }
    let app = app.layer(middleware::map_response(api::harden));
    let mut http_stop = stop_rx.clone();
    let max_connections = usize::try_from(args.max_connections).unwrap_or(512);
    let server = tokio::spawn(async move {
        crate::http::serve(listener, app, max_connections, async move {
            let _ = http_stop.wait_for(|stop| *stop).await;
        })
        .await;
    });
    let worker = tokio::spawn({
        let tasker = Arc::clone(&tasker);
        let mut stop = stop_rx.clone();
        let interval = Duration::from_secs(args.interval);
        async move {
            if tasker.pushes() {
                // SQS mode: `tasker worker` runs the tasks; this process moves them onto the
                // queue as they fall due, like the processor Lambda every minute.
                return mover_loop(&tasker, stop).await;
            }
            tasker
                .serve_queue(interval, async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                })
                .await;
        }
    });
    // Both dispatch modes: the due schedules' ticks become tasks here.
    let scheduler = tokio::spawn({
        let tasker = Arc::clone(&tasker);
        let mut stop = stop_rx.clone();
        async move {
            tasker
                .fire_schedules_until(async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                })
                .await;
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
    let _ = scheduler.await;
    let _ = cleaner.await;
    if let Err(join) = server.await {
        tracing::error!(error = %join, "HTTP server task failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Refuses to serve the API beyond this machine without a token, unless `--insecure-no-auth`
/// says so; true when it will (so the warning is repeated).
fn exposure(args: &ServeArgs, config: &Config) -> Result<bool, CliError> {
    if args.listen.ip().is_loopback() || config.api_token.is_some() {
        return Ok(false);
    }
    if args.insecure_no_auth {
        return Ok(true);
    }
    Err(CliError::Usage(format!(
        "refusing to serve the API on {} without a token: anyone who can reach that address \
         could read and create tasks. Set TASKER_API_TOKEN (or TASKER_API_TOKEN_FILE), listen \
         on 127.0.0.1, or pass --insecure-no-auth to accept the risk",
        args.listen
    )))
}

/// Repeats the open-API warning on every 1,000th request, so it stays in the recent logs.
async fn remind_open(request: Request, next: Next) -> Response {
    static SERVED: AtomicU64 = AtomicU64::new(0);
    let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
    if served % 1000 == 0 {
        tracing::warn!(
            requests = served,
            "the API is open to the network without a token (--insecure-no-auth)"
        );
    }
    next.run(request).await
}

/// How often `serve` runs the mover in SQS mode (as the template schedules the processor).
const MOVE_EVERY: Duration = Duration::from_secs(60);

/// SQS mode: one mover run a minute until `stop` turns true.
async fn mover_loop(tasker: &Tasker<Store>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(err) = tasker.move_due().await {
            tracing::error!(error = %tasker::Report(&err), "mover run failed");
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(MOVE_EVERY) => {}
        }
    }
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

pub(crate) async fn shutdown_signal() {
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
