use super::*;
use intake::template::markdown_literal as escape;

fn layout() -> Layout {
    Layout {
        lang: Lang::Da,
        sender: "Ærø Kommune".into(),
        return_address: "Ærø Kommune · Statene 2 · 5970 Ærøskøbing".into(),
        letterhead: vec!["Ærø Kommune".into(), "Borgerservice".into()],
        logo: None,
        footer: vec!["Ærø Kommune · CVR 28856075 · aeroekommune.dk".into()],
        closing: "Med venlig hilsen".into(),
        signature: vec!["Søren Æbelø".into(), "Borgerservice".into()],
    }
}

fn letter() -> Letter {
    Letter {
        address: vec![
            "Søren Østergård".into(),
            "Åboulevarden 12, 3. th.".into(),
            "8000 Aarhus C".into(),
        ],
        subject: "Ny affaldsbeholder".into(),
        text: format!(
            "Kære {},\n\nDin **nye** beholder kommer *mandag*. Husk:\n\n- den gamle beholder\n- dens låg\n\nGrüße aus der Straße.",
            escape("Søren")
        ),
        date: time::Date::from_calendar_date(2026, time::Month::December, 4).ok(),
        references: vec![("Sag".into(), "2026-0042".into())],
    }
}

#[test]
fn the_address_lies_inside_the_envelope_window_and_the_text_below_it() {
    let r = Renderer::new(layout());
    let doc = r.typeset(&letter()).unwrap();
    assert_eq!(doc.pages.len(), 1);
    let texts = texts(&doc);
    let at = |needle: &str| {
        texts
            .iter()
            .find(|(_, _, _, t)| t.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not on the page: {texts:?}"))
            .clone()
    };
    for line in [
        "Søren Østergård",
        "Åboulevarden 12, 3. th.",
        "8000 Aarhus C",
    ] {
        let (page, x, y, _) = at(line);
        assert_eq!(page, 1);
        assert!(
            ADDRESS_WINDOW_MM.holds(x, y),
            "{line} at {x:.1} mm, {y:.1} mm"
        );
        // Inside the address zone proper, under the 17.7 mm for the return address.
        assert!(y > ADDRESS_WINDOW_MM.top + 17.7, "{line} at {y:.1} mm");
    }
    let (_, x, y, _) = at("Statene 2");
    assert!(
        ADDRESS_WINDOW_MM.holds(x, y) && y < ADDRESS_WINDOW_MM.top + 17.7,
        "{y}"
    );
    // The date in the information block at 125 mm, the subject under the window.
    let (_, x, y, _) = at("4. december 2026");
    assert!(x > 125.0 && y > 50.0 && y < 100.0, "{x} {y}");
    let (_, _, y, _) = at("Ny affaldsbeholder");
    assert!(y > ADDRESS_WINDOW_MM.top + ADDRESS_WINDOW_MM.height, "{y}");
    let (_, _, body, _) = at("Kære");
    assert!(body > y);
    // Nothing of the text lies in the window.
    for (_, x, y, t) in &texts {
        if ADDRESS_WINDOW_MM.holds(*x, *y) {
            assert!(
                ["Søren", "Åboulevarden", "8000", "Ærø"]
                    .iter()
                    .any(|w| t.contains(w)),
                "{t} in the window"
            );
        }
    }
}

#[test]
fn the_pdf_holds_the_letter_in_danish_and_german_letters() {
    let r = Renderer::new(layout());
    let out = r.render(&letter()).unwrap();
    assert_eq!(out.pages, 1);
    assert!(out.pdf.starts_with(b"%PDF-"));
    let text = pdf_extract::extract_text_from_mem(&out.pdf).unwrap();
    for want in [
        "Søren Østergård",
        "Åboulevarden",
        "Kære Søren",
        "nye",
        "dens låg",
        "Grüße aus der Straße",
        "Med venlig hilsen",
        "Søren Æbelø",
        "Sag",
        "2026-0042",
    ] {
        assert!(text.contains(want), "{want} missing from {text}");
    }
    // PDF/A-2b: the identification is in the document's metadata.
    let pdf = String::from_utf8_lossy(&out.pdf);
    assert!(
        pdf.contains("pdfaid:part") || pdf.contains("pdfaid"),
        "no PDF/A id"
    );
}

#[test]
fn a_long_letter_gets_page_numbers_and_the_signature_stays_whole() {
    let mut l = letter();
    l.text = (0..60)
        .map(|i| format!("Afsnit {i}: en sætning, der fylder en linje eller to i brevet."))
        .collect::<Vec<_>>()
        .join("\n\n");
    let r = Renderer::new(layout());
    let doc = r.typeset(&l).unwrap();
    assert!(doc.pages.len() >= 2, "{}", doc.pages.len());
    let texts = texts(&doc);
    let last = doc.pages.len();
    assert!(
        texts
            .iter()
            .any(|(p, _, _, t)| *p == last && t.contains(&format!("Side {last} af {last}"))),
        "{:?}",
        texts.iter().filter(|t| t.0 == last).collect::<Vec<_>>()
    );
    let closing = texts.iter().find(|t| t.3.contains("Med venlig")).unwrap();
    let name = texts.iter().find(|t| t.3.contains("Søren Æbelø")).unwrap();
    assert_eq!(closing.0, name.0, "the signature block is not split");
}

#[test]
fn a_value_that_looks_like_markup_is_printed_as_written() {
    let mut l = letter();
    l.text = format!("Til {}", escape("#set page(width: 1mm) *x* ]"));
    let r = Renderer::new(layout());
    let out = r.render(&l).unwrap();
    let text = pdf_extract::extract_text_from_mem(&out.pdf).unwrap();
    assert!(text.contains("#set page(width: 1mm) *x* ]"), "{text}");
    assert_eq!(out.pages, 1);
}

#[test]
fn a_logo_is_set_in_the_letterhead() {
    let svg = br##"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"><rect width="40" height="20" fill="#236"/></svg>"##;
    let mut lay = layout();
    lay.logo = Some(Logo {
        bytes: svg.to_vec(),
        kind: LogoKind::Svg,
    });
    let r = Renderer::new(lay);
    let doc = r.typeset(&letter()).unwrap();
    let has_shape = doc.pages[0]
        .frame
        .items()
        .any(|(_, i)| matches!(i, typst::layout::FrameItem::Group(_)));
    assert!(has_shape);
    assert!(r.render(&letter()).is_ok());
    // A logo that is not what its name says is refused with the reason.
    let mut lay = layout();
    lay.logo = Some(Logo {
        bytes: b"not a png".to_vec(),
        kind: LogoKind::Png,
    });
    let e = Renderer::new(lay).typeset(&letter()).unwrap_err();
    assert!(matches!(e, LetterError::Typeset(_)), "{e}");
}

#[test]
fn dates_in_each_language() {
    let d = time::Date::from_calendar_date(2026, time::Month::March, 1).unwrap();
    assert_eq!(Lang::En.date(d), "1 March 2026");
    assert_eq!(Lang::Da.date(d), "1. marts 2026");
    assert_eq!(Lang::De.date(d), "1. März 2026");
}

#[test]
fn a_run_of_letters_starts_each_on_a_new_page_with_page_numbers_of_its_own() {
    let short = |name: &str| Letter {
        address: vec![name.to_string(), "Gade 1".into(), "8000 Aarhus C".into()],
        ..letter()
    };
    let mut long = short("Bo Long");
    long.text = (0..60)
        .map(|i| format!("Afsnit {i}: en sætning, der fylder en linje eller to i brevet."))
        .collect::<Vec<_>>()
        .join("\n\n");
    let run = [short("Ann First"), long, short("Cy Third")];
    let r = Renderer::new(layout());
    let doc = r.typeset_run("Print part 1", &run).unwrap();
    let texts = texts(&doc);
    let page_of = |needle: &str| {
        texts
            .iter()
            .find(|t| t.3.contains(needle))
            .unwrap_or_else(|| panic!("{needle}"))
            .0
    };
    assert_eq!(page_of("Ann First"), 1);
    assert_eq!(page_of("Bo Long"), 2);
    let third = page_of("Cy Third");
    assert!(third >= 4, "{third}");
    // The long letter is numbered on its own; the short ones are not numbered at all.
    let numbers: Vec<_> = texts
        .iter()
        .filter(|t| t.3.starts_with("Side "))
        .map(|t| (t.0, t.3.clone()))
        .collect();
    let pages_of_long = third - 2;
    assert_eq!(numbers.len(), pages_of_long, "{numbers:?}");
    assert_eq!(numbers[0], (2, format!("Side 1 af {pages_of_long}")));
    let out = r.render_run("Print part 1", &run).unwrap();
    assert_eq!(out.starts, vec![1, 2, third]);
    assert_eq!(out.pages, third);
    // The address of every letter lies in the window of its own first page.
    for (name, page) in [("Ann First", 1), ("Bo Long", 2), ("Cy Third", third)] {
        let (p, x, y, _) = texts.iter().find(|t| t.3.contains(name)).unwrap();
        assert_eq!(*p, page);
        assert!(ADDRESS_WINDOW_MM.holds(*x, *y), "{name}");
    }
}
