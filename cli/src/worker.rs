//! `tasker worker`: SQS mode on one machine. It long-polls the queue and runs the handler code
//! the worker Lambda runs, up to `TASKER_CONCURRENCY` messages at once.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tasker::compose::{self, TaskTypes};
use tasker::push::sqs::SqsQueue;
use tasker::runtime;

use crate::{CliError, StoreArgs};

#[derive(Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The SQS queue to read (and to send retries to).
    #[arg(long, env = "TASKER_QUEUE_URL")]
    queue_url: String,
    /// Seconds a receive waits for messages (SQS long polling, at most 20).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=20))]
    wait: u64,
}

/// Receives and works messages until Ctrl-C or SIGTERM, then finishes the messages in hand and
/// prints the counts as JSON.
pub(crate) async fn worker(args: WorkerArgs, types: TaskTypes) -> Result<(), CliError> {
    let config = crate::config(&args.store)?;
    let queue = SqsQueue::from_env(&args.queue_url).await;
    let store = compose::open_store(&config).await?;
    let tasker = compose::tasker_over(&config, store, types)?.with_push(Arc::new(queue.clone()));
    compose::check_visibility(&tasker, &queue).await?;
    tracing::info!(queue = %args.queue_url, "tasker worker reading the queue");
    let (stopper, stop) = runtime::stop_signal();
    let wait = Duration::from_secs(args.wait);
    let concurrency = config.processor.concurrency;
    let receiving = runtime::receive::receive_all(&tasker, &queue, concurrency, wait, stop);
    let stopping = async {
        crate::serve::shutdown_signal().await;
        tracing::info!("stopping: finishing the messages in hand");
        stopper.stop();
    };
    let (total, ()) = tokio::join!(receiving, stopping);
    out!("{}", serde_json::to_string(&total)?);
    Ok(())
}
