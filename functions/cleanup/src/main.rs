//! The cleanup function: it runs no handlers, so it links neither the webhook client nor any
//! task type.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    cleanup::run().await
}
