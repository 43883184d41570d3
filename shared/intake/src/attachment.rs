//! Files attached to email, judged before anything is sent.

/// Why a file cannot be a dispatch's PDF attachment: not a PDF, unreadable, encrypted (a
/// password the recipients do not have), or without pages.
pub fn check_pdf(bytes: &[u8]) -> Result<(), String> {
    let head = &bytes[..bytes.len().min(1024)];
    if !head.windows(5).any(|w| w == b"%PDF-") {
        return Err("is not a PDF (it does not start with %PDF-)".into());
    }
    let doc = match lopdf::Document::load_mem(bytes) {
        Ok(d) => d,
        Err(e) => {
            if has_encrypt_entry(bytes) {
                return Err("is encrypted; attach a PDF that opens without a password".into());
            }
            return Err(format!("cannot be read as a PDF: {e}"));
        }
    };
    if doc.is_encrypted() || doc.trailer.get(b"Encrypt").is_ok() || doc.encryption_state.is_some() {
        return Err("is encrypted; attach a PDF that opens without a password".into());
    }
    if doc.get_pages().is_empty() {
        return Err("has no pages".into());
    }
    Ok(())
}

fn has_encrypt_entry(bytes: &[u8]) -> bool {
    bytes.windows(8).any(|w| w == b"/Encrypt")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lopdf::dictionary;

    /// A one-page PDF, with an `/Encrypt` entry in its trailer when asked.
    pub(crate) fn pdf(encrypted: bool) -> Vec<u8> {
        let mut doc = lopdf::Document::with_version("1.7");
        let pages_id = doc.new_object_id();
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        });
        doc.objects.insert(
            pages_id,
            lopdf::Object::Dictionary(dictionary! {
                "Type" => "Pages",
                "Kids" => vec![page_id.into()],
                "Count" => 1,
            }),
        );
        let catalog = doc.add_object(dictionary! {
            "Type" => "Catalog",
            "Pages" => pages_id,
        });
        doc.trailer.set("Root", catalog);
        if encrypted {
            let enc = doc.add_object(dictionary! {
                "Filter" => "Standard",
                "V" => 2,
                "R" => 3,
                "Length" => 128,
                "P" => -44,
                "O" => lopdf::Object::string_literal(vec![1u8; 32]),
                "U" => lopdf::Object::string_literal(vec![2u8; 32]),
            });
            doc.trailer.set("Encrypt", enc);
            doc.trailer.set(
                "ID",
                vec![
                    lopdf::Object::string_literal(vec![3u8; 16]),
                    lopdf::Object::string_literal(vec![3u8; 16]),
                ],
            );
        }
        let mut out = Vec::new();
        doc.save_to(&mut out).expect("pdf");
        out
    }

    #[test]
    fn a_plain_pdf_is_accepted() {
        assert_eq!(check_pdf(&pdf(false)), Ok(()));
    }

    #[test]
    fn an_encrypted_pdf_is_refused_by_name() {
        let e = check_pdf(&pdf(true)).unwrap_err();
        assert!(e.contains("encrypted"), "{e}");
    }

    #[test]
    fn text_named_pdf_and_a_broken_pdf_are_refused() {
        assert!(check_pdf(b"Dear all, see below")
            .unwrap_err()
            .contains("is not a PDF"));
        let mut cut = pdf(false);
        cut.truncate(40);
        assert!(check_pdf(&cut).is_err());
    }
}
