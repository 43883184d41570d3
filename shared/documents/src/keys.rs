//! Where each document of a dispatch is kept in the reports bucket.

pub fn package(id: &str) -> String {
    format!("dispatches/{id}/package.json")
}
pub fn report(id: &str) -> String {
    format!("dispatches/{id}/validation-report.csv")
}
pub fn summary(id: &str) -> String {
    format!("dispatches/{id}/validation-summary.json")
}
pub fn sample(id: &str) -> String {
    format!("dispatches/{id}/sample.json")
}
pub fn history(id: &str) -> String {
    format!("dispatches/{id}/history.csv")
}
/// The list with each recipient's status, as last downloaded.
pub fn download(id: &str, ext: &str) -> String {
    format!("dispatches/{id}/download.{ext}")
}
pub fn history_summary(id: &str) -> String {
    format!("dispatches/{id}/history-summary.json")
}
/// The header a list for this dispatch's templates must have, as CSV or XLSX.
pub fn example(id: &str, ext: &str) -> String {
    format!("dispatches/{id}/example.{ext}")
}
/// Where an earlier validation attempt's document is kept.
pub fn attempt(id: &str, attempt: u32, document: &str) -> String {
    format!("dispatches/{id}/attempts/{attempt}/{document}")
}

/// A recipient's letter, by the recipient's record key (its sort key, with every character
/// but letters, digits, `-`, `_` and `.` written as `%XX`, so that no id makes a folder).
pub fn letter(id: &str, recipient_sk: &str) -> String {
    let mut safe = String::with_capacity(recipient_sk.len() + 8);
    for b in recipient_sk.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            safe.push(b as char);
        } else {
            safe.push_str(&format!("%{b:02X}"));
        }
    }
    format!("dispatches/{id}/letters/{safe}.pdf")
}

/// The dispatch's email attachment, frozen at validation under its SHA-256.
pub fn attachment(id: &str, sha256: &str) -> String {
    format!("dispatches/{id}/attachment/{sha256}.pdf")
}

/// Where the print files of generation `generation` are kept.
pub fn print_prefix(id: &str, generation: u32) -> String {
    format!("dispatches/{id}/print/{generation}/")
}

/// Print part `part` (from 1) of a generation, as PDF (`pdf`) or its index (`csv`).
pub fn print_part(id: &str, generation: u32, part: u32, ext: &str) -> String {
    format!("{}part-{part:04}.{ext}", print_prefix(id, generation))
}

/// A sample letter of a validation, by its place among the samples.
pub fn sample_letter(id: &str, n: usize) -> String {
    format!("dispatches/{id}/sample-letter-{n}.pdf")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_letter_key_makes_no_folder_of_an_id() {
        assert_eq!(
            super::letter("d1", "R#a/b ø"),
            "dispatches/d1/letters/R%23a%2Fb%20%C3%B8.pdf"
        );
    }
}
