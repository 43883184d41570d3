//! The validation report: one CSV line per problem found in the list.

use crate::csvout::CsvDoc;
use intake::validation::Problem;

/// The validation report's columns: one line per problem.
pub const REPORT_COLUMNS: [&str; 5] = ["line", "recipient_id", "column", "code", "message"];

/// Writes a problem as a line of the report.
pub fn report_line<W: std::io::Write>(report: &mut CsvDoc<W>, problem: &Problem) {
    let line = problem.line.to_string();
    report.row([
        line.as_str(),
        &problem.recipient_id,
        &problem.column,
        problem.code,
        &problem.message,
    ]);
}
