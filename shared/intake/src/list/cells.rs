//! Cells as the operator typed them: whole numbers without `.0`, dates as ISO dates.

use super::*;

/// A cell as text the way the operator sees it in the spreadsheet, with the spaces around a
/// text cell trimmed.
pub fn cell_text(cell: &Data) -> String {
    cell_text_as(cell, Cells::Trimmed)
}

/// A cell as text, text cells trimmed or as uploaded.
pub fn cell_text_as(cell: &Data, cells: Cells) -> String {
    match cell {
        Data::Empty => String::new(),
        Data::String(s) => cells.apply(s).to_string(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => float_text(*f),
        Data::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        Data::DateTime(dt) => match dt.as_datetime() {
            Some(d) if d.time() == chrono::NaiveTime::MIN => {
                d.date().format("%Y-%m-%d").to_string()
            }
            Some(d) => d.format("%Y-%m-%dT%H:%M:%S").to_string(),
            None => float_text(dt.as_f64()),
        },
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Error(e) => format!("#{e:?}"),
    }
}

/// A streamed cell as text: strings trimmed straight from the reader's buffer, other values
/// written to `scratch` as [`cell_text`] writes them (whole numbers and dates without going
/// through a new string).
pub(super) fn cell_ref_str<'a>(
    cell: &'a calamine::DataRef<'_>,
    scratch: &'a mut String,
    cells: Cells,
) -> &'a str {
    use chrono::Datelike;
    scratch.clear();
    match cell {
        calamine::DataRef::SharedString(s) => return cells.apply(s),
        calamine::DataRef::String(s) => return cells.apply(s),
        calamine::DataRef::Empty => {}
        calamine::DataRef::Float(f) if whole(*f) => {
            let _ = write!(scratch, "{}", *f as i64);
        }
        calamine::DataRef::Int(i) => {
            let _ = write!(scratch, "{i}");
        }
        calamine::DataRef::DateTime(dt) => match dt.as_datetime() {
            Some(d) if d.time() == chrono::NaiveTime::MIN && (1000..=9999).contains(&d.year()) => {
                let _ = write!(scratch, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
            }
            _ => scratch.push_str(&cell_text(&Data::from(cell.clone()))),
        },
        other => scratch.push_str(&cell_text(&Data::from(other.clone()))),
    }
    scratch
}

pub(super) fn whole(f: f64) -> bool {
    f.is_finite() && f.fract() == 0.0 && f.abs() < 1e17
}

/// Whole numbers print without a fraction or exponent (IDs and phone numbers typed as numbers).
pub(super) fn float_text(f: f64) -> String {
    if whole(f) {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}
