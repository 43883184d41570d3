//! Typesets one print part and prints its time and the process's peak memory:
//! `cargo run --profile bench -p letters --example part -- <letters> <extra paragraphs>`.
use letters::*;

fn hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(500);
    let paragraphs: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let layout = Layout {
        lang: Lang::Da,
        sender: "Ærø Kommune".into(),
        return_address: "Ærø Kommune · Statene 2 · 5970 Ærøskøbing".into(),
        letterhead: vec!["Ærø Kommune".into()],
        footer: vec!["aeroekommune.dk".into()],
        closing: "Med venlig hilsen".into(),
        signature: vec!["Søren Æbelø".into()],
        ..Layout::default()
    };
    let run: Vec<Letter> = (0..n)
        .map(|i| Letter {
            address: vec![format!("Beboer {i}"), format!("Storegade {i}"), "8000 Aarhus C".into()],
            subject: format!("Ny beholder {i}"),
            text: (0..=paragraphs)
                .map(|p| format!("Afsnit {p}: Beholderen tømmes hver anden uge. Har du spørgsmål om ordningen, er du velkommen til at kontakte os i vores åbningstid."))
                .collect::<Vec<_>>()
                .join("\n\n"),
            ..Letter::default()
        })
        .collect();
    let r = Renderer::new(layout);
    let t = std::time::Instant::now();
    let doc = r.typeset_run("part", &run).expect("typeset");
    println!(
        "typeset {} pages in {:.2} s; {}",
        doc.pages.len(),
        t.elapsed().as_secs_f64(),
        hwm()
    );
    let out = r.render_run("part", &run).expect("render");
    println!(
        "rendered {} pages, {} bytes in {:.2} s total; {}",
        out.pages,
        out.pdf.len(),
        t.elapsed().as_secs_f64(),
        hwm()
    );
}
