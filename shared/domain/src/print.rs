//! Print files: when every letter of a dispatch is produced, its letters are put together in
//! parts of at most a set number of letters, sorted as the manifest says (what a print shop or
//! a postal discount needs), each part a PDF with a CSV index. The operator may build them
//! again as often as needed, until the letter run is closed; after that they cannot change,
//! and the run keeps the SHA-256 of every file it closed with.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Letters per part when the manifest does not say.
pub const DEFAULT_PART_LETTERS: u32 = 500;
/// The most letters a part may hold (a print part is typeset in one go).
pub const MAX_PART_LETTERS: u32 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrintState {
    /// A print job is building this generation.
    Building,
    /// Every part is built.
    Ready,
    /// The build ended without every part; the job's outcome says why.
    Failed,
    /// Closed: the files cannot change any more.
    Closed,
}

/// One print file and its index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrintPart {
    pub part: u32,
    pub letters: u32,
    pub pages: u32,
    pub pdf_key: String,
    pub index_key: String,
    pub pdf_sha256: String,
    pub index_sha256: String,
}

/// A dispatch's print files as last built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrintRun {
    pub dispatch_id: String,
    /// Counts up with every build: the files of a build are kept under its number.
    pub generation: u32,
    pub state: PrintState,
    /// The job that builds it.
    pub job_id: String,
    pub sort_by: Vec<String>,
    pub part_letters: u32,
    /// Letters in the run.
    pub letters: u64,
    pub parts: Vec<PrintPart>,
    pub requested_by: String,
    pub started_at: String,
    pub built_at: Option<String>,
    pub closed_at: Option<String>,
    pub closed_by: Option<String>,
}

/// Sort values compared the way people sort them: two values of digits alone as numbers
/// (postcode 2960 before 10115), anything else by its text without regard to case.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if digits(a) && digits(b) {
        let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    } else {
        a.to_lowercase()
            .cmp(&b.to_lowercase())
            .then_with(|| a.cmp(b))
    }
}

/// Two letters' sort values compared column by column.
pub fn sort_cmp(a: &[String], b: &[String]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match natural_cmp(x.trim(), y.trim()) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postcodes_sort_as_numbers_and_names_as_text() {
        let mut v = vec!["8000", "10115", "2960", "0800"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["0800", "2960", "8000", "10115"]);
        let mut v = vec!["bo", "Ann", "ann", "SW1A 2AA", "E1 6AN"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["Ann", "ann", "bo", "E1 6AN", "SW1A 2AA"]);
        let s = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            sort_cmp(&s(&["8000", "Bo"]), &s(&["8000", "Ann"])),
            Ordering::Greater
        );
        assert_eq!(
            sort_cmp(&s(&["2960", "Zed"]), &s(&["8000", "Ann"])),
            Ordering::Less
        );
    }
}
