//! Limits of the services that shape the domain's batches.

use crate::{Error, Result};

/// Items of one transaction: the service's limit.
pub const MAX_TRANSACTION_ITEMS: usize = 100;
/// Recipients of one claim or one result write (one item is the dispatch).
pub const MAX_RECIPIENTS_PER_WRITE: usize = MAX_TRANSACTION_ITEMS - 1;

/// Refuses a claim or result write of more recipients than one transaction holds; `what`
/// names them ("recipients in one claim", "results in one write").
pub fn within_one_write(count: usize, what: &str) -> Result<()> {
    if count > MAX_RECIPIENTS_PER_WRITE {
        return Err(Error::Malformed(format!(
            "{count} {what}; at most {MAX_RECIPIENTS_PER_WRITE}"
        )));
    }
    Ok(())
}
