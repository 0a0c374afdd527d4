use lambda_http::{Error, run, tracing};
use std::sync::Arc;

use tasker::Config;
use tasker::push::Push;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let store = config.open_store().await?;
    let queue = config
        .open_queue()
        .await
        .map(|queue| Arc::new(queue) as Arc<dyn Push>);
    run(enqueue::app(&config, store, queue)?).await
}
