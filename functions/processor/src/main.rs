//! The processor function as shipped: the built-in task types.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    processor::run(tasker::compose::builtin_types).await
}
