//! What comes in from outside, read and judged without any service: recipient lists (CSV
//! and workbooks), the validation rules for each row, message templates, the length of an
//! SMS, and the providers' delivery events.
//!
//! - [`list`]: reading CSV and workbook lists
//! - [`validation`]: header and row rules
//! - [`template`]: message templates
//! - [`sms`]: SMS encoding and segments
//! - [`events`]: provider delivery events
//! - [`attachment`]: files attached to email

pub mod attachment;
pub mod events;
pub mod list;
pub mod sms;
pub mod template;
pub mod validation;
