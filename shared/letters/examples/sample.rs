//! Writes a sample letter: `cargo run -p letters --example sample -- out.pdf`.
use letters::*;

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "letter.pdf".into());
    let layout = Layout {
        lang: Lang::Da,
        sender: "Ærø Kommune".into(),
        return_address: "Ærø Kommune · Statene 2 · 5970 Ærøskøbing".into(),
        letterhead: vec![
            "Ærø Kommune".into(),
            "Borgerservice".into(),
            "Statene 2, 5970 Ærøskøbing".into(),
        ],
        logo: None,
        footer: vec![
            "Ærø Kommune · CVR 28856075".into(),
            "aeroekommune.dk · 63 52 50 00".into(),
        ],
        closing: "Med venlig hilsen".into(),
        signature: vec!["Søren Æbelø".into(), "Borgerservice".into()],
    };
    let letter = Letter {
        address: vec!["Søren Østergård".into(), "Åboulevarden 12, 3. th.".into(), "8000 Aarhus C".into()],
        subject: "Ny affaldsbeholder".into(),
        text: "Kære Søren,\n\nDin **nye** beholder kommer *mandag*. Husk:\n\n- den gamle beholder\n- dens låg\n\nVenlig hilsen fra os alle.".into(),
        date: None,
        references: vec![("Sag".into(), "2026-0042".into())],
    };
    let r = Renderer::new(layout).render(&letter).expect("render");
    std::fs::write(&out, r.pdf).expect("write");
}
