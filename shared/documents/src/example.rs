//! The example file of a dispatch: the header row a recipient list for its templates must
//! have (the id, the address columns of its channels, the exclusion columns, then every merge
//! field), as CSV and as an XLSX whose columns are formatted as text so that ids with leading
//! zeros and phone numbers survive typing.

use domain::manifest::{ChannelMode, Manifest};
use domain::model::Channel;
use intake::list::normalise_header;
use intake::template::MessageTemplate;

/// The columns, in order, without repeats (names compared as headers are).
pub fn columns(manifest: &Manifest, template: &MessageTemplate) -> Vec<String> {
    let c = &manifest.columns;
    let mut out: Vec<String> = vec![c.id.clone()];
    let postal = || {
        let mut p = vec![c.addressee.clone()];
        p.extend(c.address_lines.iter().cloned());
        p.extend([c.postcode.clone(), c.city.clone(), c.country.clone()]);
        p
    };
    match manifest.channel {
        ChannelMode::Email => out.push(c.email.clone()),
        ChannelMode::Sms => out.push(c.phone.clone()),
        ChannelMode::Letter => out.extend(postal()),
        ChannelMode::Column => {
            out.push(c.channel.clone());
            if template.has(Channel::Email) {
                out.push(c.email.clone());
            }
            if template.has(Channel::Sms) {
                out.push(c.phone.clone());
            }
            if template.has(Channel::Letter) {
                out.extend(postal());
            }
        }
    }
    let x = &manifest.exclusions;
    out.extend(x.status_column.iter().cloned());
    out.extend(x.consent_column.iter().cloned());
    out.extend(template.all_fields());
    let mut seen = std::collections::HashSet::new();
    out.retain(|name| seen.insert(normalise_header(name)));
    out
}

/// The header as a CSV file (UTF-8 with a byte order mark, so Excel opens it as UTF-8).
pub fn csv(columns: &[String]) -> Vec<u8> {
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    crate::csvout::CsvDoc::to_writer(b"\xEF\xBB\xBF".to_vec(), &names).finish()
}

/// The header as an XLSX workbook with one sheet, "Recipients".
pub fn xlsx(columns: &[String]) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("Recipients")?;
    let bold = rust_xlsxwriter::Format::new().set_bold();
    let text = rust_xlsxwriter::Format::new().set_num_format("@");
    for (i, name) in columns.iter().enumerate() {
        let col = u16::try_from(i).unwrap_or(u16::MAX);
        sheet.write_string_with_format(0, col, name, &bold)?;
        sheet.set_column_format(col, &text)?;
        sheet.set_column_width(col, (name.chars().count() as f64 + 4.0).max(14.0))?;
    }
    sheet.set_freeze_panes(1, 0)?;
    book.save_to_buffer()
}

#[cfg(test)]
mod tests {
    use super::*;
    use intake::list::ListReader;
    use intake::template::{EmailSource, SmsSource, TemplateSource};

    fn setup() -> (Manifest, MessageTemplate) {
        let m = Manifest::parse(
            br#"{"title":"t","list":"l.csv","channel":"column",
                "columns":{"id":"CPR"},
                "email":{"from":"a@example.org","subject":"Hi {{ name }}","text":"t.txt"},
                "sms":{"text":"s.txt"},
                "exclusions":{"status_column":"Status","excluded_codes":["90"],"consent_column":"Consent"}}"#,
        )
        .unwrap();
        let t = MessageTemplate::compile(TemplateSource {
            letter: None,
            email: Some(EmailSource {
                from: "a@example.org".into(),
                subject: "Hi {{ name }}".into(),
                text: "Dear {{ name }}, your meeting is on {{ meeting_date }}. {{ status }}".into(),
                html: None,
                ..Default::default()
            }),
            sms: Some(SmsSource {
                text: "Hi {{ name }}".into(),
                sender_id: None,
            }),
        })
        .unwrap();
        (m, t)
    }

    #[test]
    fn the_example_names_ids_addresses_exclusions_and_merge_fields_once() {
        let (m, t) = setup();
        assert_eq!(
            columns(&m, &t),
            [
                "CPR",
                "channel",
                "email",
                "phone",
                "Status",
                "Consent",
                "meeting_date",
                "name"
            ]
        );
    }

    #[test]
    fn both_files_read_back_as_the_same_header() {
        let (m, t) = setup();
        let cols = columns(&m, &t);
        let r = ListReader::open("example.csv", csv(&cols), None).unwrap();
        assert_eq!(r.headers(), cols.as_slice());
        let r = ListReader::open("example.xlsx", xlsx(&cols).unwrap(), None).unwrap();
        assert_eq!(r.headers(), cols.as_slice());
    }
}
