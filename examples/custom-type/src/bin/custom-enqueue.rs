//! The enqueue Lambda with the application's task types (a create may name `notifyChat`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    enqueue::run(custom_type::task_types).await
}
