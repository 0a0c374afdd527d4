//! Every end-to-end test of Tasker in one binary (one link of the AWS SDKs instead of one per
//! file), a module per subject. They run against DynamoDB Local and moto's SQS server (started
//! by `scripts/test.sh`, found through `TASKER_TEST_DYNAMODB_ENDPOINT` and
//! `TASKER_TEST_SQS_ENDPOINT`), SQLite, real `tasker` processes and a headless Chromium.

mod api;
mod cli;
mod cli_surface;
mod conformance;
mod crash;
mod dashboard;
mod due_open;
mod due_queue;
mod e2e;
mod exposure;
mod fuzz;
mod hostile;
mod iam;
mod key_limits;
mod lambda_events;
mod openapi;
mod postgres;
mod postgres_processes;
mod postgres_tls;
mod read_ahead;
mod reliability;
mod schedules;
mod schedules_api;
mod sqs;
mod sqs_crash;
mod sqs_receive;
mod stats;
mod sweep;
mod template;
mod webhook_answers;
