//! `tasker worker` and `tasker move`: SQS mode on one machine. The worker long-polls the queue
//! and runs the handler code the worker Lambda runs; `move` is one run of the processor's
//! mover.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tasker::push::consume::consume;
use tasker::push::sqs::{BATCH_MAX, SqsQueue};
use tasker::tasker::WorkSummary;
use tasker::{Store, Tasker};
use tokio::sync::watch;

use crate::{CliError, StoreArgs, config};

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

/// Receives and works messages until Ctrl-C or SIGTERM, then finishes the batches in hand.
/// Batches of up to ten are received by as many loops as TASKER_CONCURRENCY fills.
pub(crate) async fn worker(args: WorkerArgs) -> Result<(), CliError> {
    let config = config(&args.store)?;
    let queue = SqsQueue::from_env(&args.queue_url).await;
    let store = config.open_store().await?;
    let tasker = Arc::new(
        config
            .tasker_over(store)?
            .with_push(Arc::new(queue.clone())),
    );
    let receivers = config.processor.concurrency.div_ceil(BATCH_MAX).max(1);
    tracing::info!(queue = %args.queue_url, receivers, "tasker worker reading the queue");
    let (stop_tx, stop_rx) = watch::channel(false);
    let wait = Duration::from_secs(args.wait);
    let loops: Vec<_> = (0..receivers)
        .map(|_| {
            tokio::spawn(receive_loop(
                Arc::clone(&tasker),
                queue.clone(),
                wait,
                stop_rx.clone(),
            ))
        })
        .collect();
    crate::serve::shutdown_signal().await;
    tracing::info!("stopping: finishing the batches in hand");
    let _ = stop_tx.send(true);
    let mut total = WorkSummary::default();
    for summary in futures::future::join_all(loops).await.into_iter().flatten() {
        total.absorb(&summary);
    }
    out!("{}", serde_json::to_string(&total)?);
    Ok(())
}

async fn receive_loop(
    tasker: Arc<Tasker<Store>>,
    queue: SqsQueue,
    wait: Duration,
    mut stop: watch::Receiver<bool>,
) -> WorkSummary {
    consume(&tasker, &queue, wait, async move {
        let _ = stop.wait_for(|stop| *stop).await;
    })
    .await
}

/// One mover run: prints its summary as JSON.
pub(crate) async fn move_once(args: StoreArgs) -> Result<(), CliError> {
    let config = config(&args)?;
    let tasker = config.build_tasker().await?;
    crate::fire_once(&tasker).await;
    let summary = tasker.move_due().await?;
    out!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
