//! Errors of the library. AWS errors keep their source; callers decide from the kind whether
//! a retry can help.

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An AWS call failed; retrying later may help.
    #[error("{op} failed: {}", chain(.source.as_ref()))]
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

/// An error and its sources, each shown once, without the raw response dumps that SDK
/// errors carry in their debug form.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner detail")]
    struct Inner;

    #[test]
    fn aws_errors_show_their_causes_once() {
        let e = Error::aws("PutItem")(Outer(Inner));
        assert_eq!(e.to_string(), "PutItem failed: outer: inner detail");
        assert!(e.is_retryable());
        assert!(!Error::Malformed("x".into()).is_retryable());
    }
}
