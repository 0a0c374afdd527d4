//! The HTTP server of `tasker serve`, with the limits `axum::serve` has no settings for: a
//! client gets a few seconds to send its request head, may not pause mid-body for long nor
//! take more than a minute for all of it, and must read its answers; the open connections are capped, so stalled clients cannot pile up
//! until file descriptors run out. hyper's, tower-http's and tokio-io-timeout's settings do the
//! work; this file only wires them, with
//! [`deadline`] for the whole body.

mod deadline;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// A request head (request line and headers) must arrive within this time, counted from the
/// moment the server waits for it: on a new connection, or an idle kept-alive one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause allowed while a request body arrives.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a whole request body may take, from its head (the largest, a 5 MiB batch,
/// needs ~90 KB/s).
pub const BODY_DEADLINE: Duration = Duration::from_secs(60);
/// The longest a write of an answer may wait for the client to read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop waits for open connections to finish their requests: as long as one
/// DynamoDB call may take with its retries.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// Serves `app` on one accepted connection with the read and write limits, in a task of its
/// own that gives its `permit` back when the connection ends; `graceful` stops it at a stop.
fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    permit: tokio::sync::OwnedSemaphorePermit,
    graceful: &GracefulShutdown,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let request = request.map(|body| {
            let body = deadline::Deadline::new(body, BODY_DEADLINE);
            Body::new(TimeoutBody::new(BODY_READ_TIMEOUT, body))
        });
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.oneshot(request).await.unwrap_or_else(|e| match e {})) }
    });
    let mut stream = TimeoutStream::new(stream);
    stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection =
        graceful.watch(builder.serve_connection(TokioIo::new(Box::pin(stream)), service));
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "connection ended with an error");
        }
        drop(permit);
    });
}

/// Serves `app` on `listener` with at most `max_connections` open connections until `stop`
/// completes, then lets the requests in progress finish (for up to 30 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    stop: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        // Past the cap, connections wait in the listen backlog until one closes.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of descriptors, or a connection reset before it was taken: wait
                    // a moment rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        serve_connection(stream, app.clone(), permit, &graceful);
    }
    // New clients are refused from now on instead of waiting in the backlog.
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; stopping anyway");
    }
}
