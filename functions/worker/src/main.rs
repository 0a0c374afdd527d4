//! The worker function as shipped: the built-in task types.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    worker::run(tasker::compose::builtin_types).await
}
