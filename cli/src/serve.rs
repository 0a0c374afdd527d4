//! `tasker serve`: the HTTP API, the dashboard and the services of the dispatch mode in one
//! process, until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use clap::Args;
use tasker::api::hosts::{self, HostAllowlist};
use tasker::compose::{self, TaskTypes};
use tasker::runtime::{self, CleanupSettings, ServeSettings};
use tasker::{AnyStore, Config, Tasker, api};

use crate::{CliError, StoreArgs};

#[derive(Args)]
pub(crate) struct ServeArgs {
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

/// Serves the API and the dashboard, and runs the services of the dispatch mode (see
/// [`tasker::runtime::serve`]), until Ctrl-C or SIGTERM.
pub(crate) async fn serve(args: ServeArgs, types: TaskTypes) -> Result<(), CliError> {
    let (config, tasker) = crate::open(&args.store, types).await?;
    if let Some(queue) = compose::open_queue(&config).await {
        compose::check_visibility(&tasker, &queue).await?;
    }
    let open_to_network = exposure(&args, &config)?;
    let mut names = config.allowed_hosts.clone();
    names.extend(args.allowed_hosts.iter().cloned());
    let allowlist = HostAllowlist::for_bind(args.listen, &names)
        .map_err(|err| CliError::Usage(err.to_string()))?;
    let tasker = Arc::new(tasker);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|err| CliError::Listen(args.listen, err))?;
    let local = listener
        .local_addr()
        .map_err(|err| CliError::Listen(args.listen, err))?;
    let store = match tasker.store() {
        AnyStore::Sqlite(_) => format!("sqlite {}", config.db_path.display()),
        AnyStore::DynamoDb(store) => format!("dynamodb table {}", store.table()),
        AnyStore::Postgres(_) => "postgres".to_owned(),
    };
    tracing::info!(address = %local, store = %store, interval_s = args.interval, hosts = ?allowlist, "tasker listening on http://{local}");

    if open_to_network {
        tracing::warn!(address = %local, "serving the API to the network WITHOUT A TOKEN (--insecure-no-auth): anyone who can reach {local} can read, create and cancel tasks");
    }
    let app = app(&tasker, &config, allowlist, open_to_network);
    let (stopper, stop) = runtime::stop_signal();
    let max_connections = usize::try_from(args.max_connections).unwrap_or(512);
    let server = tokio::spawn(crate::http::serve(
        listener,
        app,
        max_connections,
        stop.wait(),
    ));
    let settings = ServeSettings {
        interval: Duration::from_secs(args.interval),
        cleanup: CleanupSettings {
            age: config.cleanup_age(),
            sweep_entries: config.sweep_entries,
        },
    };
    let services = tokio::spawn({
        let tasker = Arc::clone(&tasker);
        let stop = stop.clone();
        async move { runtime::serve(&tasker, settings, stop).await }
    });

    shutdown_signal().await;
    tracing::info!("stopping: finishing the attempts in flight and open requests");
    stopper.stop();
    if let Err(join) = services.await {
        tracing::error!(error = %join, "the services failed");
    }
    if let Err(join) = server.await {
        tracing::error!(error = %join, "HTTP server task failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The API and the dashboard behind the `Host`/`Origin` allowlist, with the hardening headers
/// on every answer (and the open-API reminder when `open_to_network`).
fn app(
    tasker: &Arc<Tasker<AnyStore>>,
    config: &Config,
    allowlist: HostAllowlist,
    open_to_network: bool,
) -> axum::Router {
    let auth = config.local_auth();
    let api = api::router(Arc::clone(tasker), auth.clone());
    let mut app = tasker::dashboard::beside(api, Arc::clone(tasker), auth, true).layer(
        middleware::from_fn_with_state(Arc::new(allowlist), hosts::require_allowed_host),
    );
    if open_to_network {
        app = app.layer(middleware::from_fn(remind_open));
    }
    app.layer(middleware::map_response(api::harden))
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
