use lambda_runtime::{Error, LambdaEvent, run, service_fn, tracing};
use tasker::{Config, Registry, Tasker};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let config = Config::from_env()?;
    // Cleanup runs no handlers: it links neither the webhook client nor the task types.
    let tasker = Tasker::new(
        config.open_store().await?,
        Registry::new(),
        config.processor,
    );
    let settings = cleanup::CleanupSettings {
        age: config.cleanup_age(),
        sweep_entries: config.sweep_entries,
        service: &config.service,
    };
    let emit = |line: &str| println!("{line}");
    run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        cleanup::handle(&tasker, settings, event, &emit)
    }))
    .await
}
