use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn, tracing};
use tasker::Config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let tasker = config.build_tasker().await?;
    let emit = |line: &str| println!("{line}");
    run(service_fn(|event: LambdaEvent<SqsEvent>| async {
        Ok::<_, Error>(worker::handle(&tasker, &config.service, event, &emit).await)
    }))
    .await
}
