//! Limits of the services that shape the domain's batches.

/// Items of one transaction: the service's limit.
pub const MAX_TRANSACTION_ITEMS: usize = 100;
/// Recipients of one claim or one result write (one item is the dispatch).
pub const MAX_RECIPIENTS_PER_WRITE: usize = MAX_TRANSACTION_ITEMS - 1;
