//! Mass dispatch: the library shared by every function.
//!
//! - [`model`] — dispatches, recipients and their state machines
//! - [`manifest`] — the upload package format
//! - [`list`] — reading CSV and workbook lists
//! - [`validation`] — row and header rules
//! - [`template`] — message templates
//! - [`store`] — DynamoDB
//! - [`claims`] — batched claims and results of recipients being sent to
//! - [`amend`] — an operator's resend and removal of recipients
//! - [`documents`] — S3 documents
//! - [`download`] — the list with each recipient's status, as CSV or XLSX
//! - [`receipts`] — provider delivery events, the suppression list
//! - [`audit`] — who did what to a dispatch
//! - [`notify`] — operator notifications on an SNS topic
//! - [`identity`] — verified callers of the API and their permissions
//! - [`queue`] — work queue messages
//! - [`channels`] — SES and SNS delivery
//! - [`csvout`] — safe CSV documents
//! - [`config`], [`aws`], [`error`] — start-up and errors

pub mod amend;
pub mod audit;
pub mod aws;
pub mod channels;
pub mod claims;
pub mod completion;
pub mod config;
pub mod csvout;
pub mod documents;
pub mod download;
pub mod error;
pub mod example;
pub mod identity;
pub mod list;
pub mod manifest;
pub mod model;
pub mod notify;
pub mod pacing;
pub mod queue;
pub mod receipts;
pub mod sms;
pub mod store;
pub mod template;
pub mod validation;

pub use error::{Error, Result};
