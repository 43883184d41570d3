//! The AWS side of mass dispatch: the clients, DynamoDB split by what it stores, S3
//! documents, the SQS work queues, SES and SNS delivery, and operator notifications.
//!
//! - [`clients`]: one SDK configuration and set of clients per process
//! - [`dynamodb`]: dispatches, recipients, claims, amendments, audit, receipts and
//!   suppression, send rates
//! - [`s3`]: uploads and reports
//! - [`sqs`]: sending to the work queues, batch answers
//! - [`channels`]: SES and SNS delivery
//! - [`senders`]: the SES account's sender identities
//! - [`notify`]: operator notifications
//! - [`metrics`]: metrics as embedded metric format lines on standard output
//! - [`wiring`]: the engine's ports built on AWS

pub mod channels;
pub mod clients;
pub mod download;
pub mod dynamodb;
pub mod letters;
pub mod metrics;
pub mod notify;
pub mod print;
pub mod s3;
pub mod senders;
pub mod sqs;
pub mod wiring;
