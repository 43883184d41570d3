//! Errors of the library. AWS errors keep their source; callers decide from the kind whether
//! a retry can help.

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An AWS call failed; retrying later may help.
    #[error("{op} failed: {}", aws_smithy_types::error::display::DisplayErrorContext(.source.as_ref()))]
    Aws {
        op: &'static str,
        #[source]
        source: BoxError,
    },
    /// A conditional write found the item in another state.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// Stored data or a message does not have the expected shape; retrying will not help.
    #[error("malformed data: {0}")]
    Malformed(String),
}

impl Error {
    /// Wraps an SDK error, keeping it as the source.
    pub fn aws<E: std::error::Error + Send + Sync + 'static>(
        op: &'static str,
    ) -> impl FnOnce(E) -> Error {
        move |e| Error::Aws {
            op,
            source: Box::new(e),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Aws { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
