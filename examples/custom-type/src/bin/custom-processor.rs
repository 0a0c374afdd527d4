//! The processor Lambda with the application's task types.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    processor::run(custom_type::task_types).await
}
