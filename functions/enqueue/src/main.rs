use lambda_http::{Error, run, tracing};
use tasker::Config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let store = config.open_store().await?;
    run(enqueue::app(&config, store)?).await
}
