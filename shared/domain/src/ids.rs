//! Ids as types: a value of one has been checked once, where it came in.

use crate::manifest::INCOMING_PREFIX;
use std::fmt;

/// Longest dispatch id accepted (the folder name).
pub const MAX_ID_LEN: usize = 64;

/// A dispatch id: the name of its package folder, letters, digits, `-`, `_` and `.`, at
/// most [`MAX_ID_LEN`] characters, not starting with `.`. The only way to make one is
/// [`DispatchId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DispatchId(String);

impl DispatchId {
    /// The id, or why the text cannot be one.
    pub fn parse(id: &str) -> Result<DispatchId, String> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(format!(
                "dispatch folder name must be 1 to {MAX_ID_LEN} characters"
            ));
        }
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || id.starts_with('.')
        {
            return Err(format!(
                "dispatch folder name '{id}' may hold only letters, digits, '-', '_' and '.'"
            ));
        }
        Ok(DispatchId(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the dispatch's package is uploaded: `incoming/<id>/`.
    pub fn folder(&self) -> String {
        format!("{INCOMING_PREFIX}{}/", self.0)
    }
}

impl fmt::Display for DispatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DispatchId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dispatch_id_is_a_folder_name() {
        let id = DispatchId::parse("winter-2026_v1.2").unwrap();
        assert_eq!(id.as_str(), "winter-2026_v1.2");
        assert_eq!(id.folder(), "incoming/winter-2026_v1.2/");
        for bad in ["", ".hidden", "a b", "a/b", "ø", &"x".repeat(65)] {
            assert!(DispatchId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(DispatchId::parse(&"x".repeat(64)).is_ok());
    }
}
