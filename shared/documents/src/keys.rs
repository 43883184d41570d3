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
