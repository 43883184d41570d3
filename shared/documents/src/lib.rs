//! The documents the system writes for operators: the validation report rows, the history
//! CSV and its summary, the list download with each recipient's status, the example list,
//! and CSV that a spreadsheet cannot mistake for formulas.
//!
//! - [`csvout`]: safe CSV documents
//! - [`history`]: a dispatch's history and summary
//! - [`download`]: the list with each recipient's status, as CSV or XLSX
//! - [`example`]: the example list for a package
//! - [`report`]: the validation report
//! - [`keys`]: where each document is kept

pub mod csvout;
pub mod download;
pub mod example;
pub mod history;
pub mod keys;
pub mod report;
