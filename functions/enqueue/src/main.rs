//! The enqueue function as shipped: the built-in task types.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    enqueue::run(tasker::compose::builtin_types).await
}
