//! The SDK client Tasker uses: its retries, its time limits, and how its errors become store
//! errors.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::BehaviorVersion;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use crate::store::StoreError;

/// A client from the standard AWS environment (region, credentials,
/// `AWS_ENDPOINT_URL_DYNAMODB` for DynamoDB Local).
pub async fn client_from_env() -> Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry_config())
        .timeout_config(timeout_config())
        .load()
        .await;
    Client::new(&config)
}

/// The SDK's retries for Tasker: more attempts than the default 3, because a lost write of an
/// outcome costs a second run of the task after its lease expires.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(6)
        .with_initial_backoff(Duration::from_millis(50))
}

/// Bounds on each call, so a stalled connection becomes a reported, retried error instead of a
/// run that never ends: 3 s to connect, 10 s per attempt, 60 s per call with its retries.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(60))
        .build()
}

/// Error codes that mean "slow down or try again", as the AWS SDKs classify them.
const RETRYABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "LimitExceededException",
];

/// The store error for a failed call of `operation`, keeping the SDK's error as its cause.
pub(crate) fn sdk_error<E, R>(operation: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let retryable = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => service
            .err()
            .code()
            .is_some_and(|code| RETRYABLE_CODES.contains(&code)),
        _ => false,
    };
    let context = format!("DynamoDB {operation}");
    if retryable {
        StoreError::unavailable_from(context, err)
    } else {
        StoreError::backend_from(context, err)
    }
}
