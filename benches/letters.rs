//! Letters typeset per second on one core, warm and in-process, for a one-page letter and a
//! two-page letter with a logo; the first letter of a process (the bundled fonts parsed, the
//! standard library built: what a cold sender pays once); the most memory one letter holds
//! while it is typeset and written as PDF; and the process's peak resident memory as the
//! letters go on, which stays flat because Typst's memory of earlier letters is let go.
//!
//! Then a print part: 500 letters typeset as one document, its time and the most memory
//! it held.
//!
//! `cargo bench --bench letters`. BENCH_LETTERS (default 300) sets how many of each kind.

use letters::{Lang, Layout, Letter, Logo, LogoKind, Renderer};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: local::memory::Counting = local::memory::Counting;

const LOGO: &[u8] = br##"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="48"><rect width="120" height="48" rx="6" fill="#1d4e89"/><circle cx="24" cy="24" r="14" fill="#f2c14e"/><rect x="48" y="14" width="60" height="8" fill="#ffffff"/><rect x="48" y="28" width="44" height="6" fill="#ffffff"/></svg>"##;

fn layout(logo: bool) -> Layout {
    Layout {
        lang: Lang::Da,
        sender: "Ærø Kommune".into(),
        return_address: "Ærø Kommune · Statene 2 · 5970 Ærøskøbing".into(),
        letterhead: vec!["Ærø Kommune".into(), "Teknik og Miljø".into()],
        logo: logo.then(|| Logo {
            bytes: LOGO.to_vec(),
            kind: LogoKind::Svg,
        }),
        footer: vec!["Ærø Kommune · CVR 28856075 · aeroekommune.dk".into()],
        closing: "Med venlig hilsen".into(),
        signature: vec!["Søren Æbelø".into(), "Teknik og Miljø".into()],
    }
}

fn letter(i: usize, paragraphs: usize) -> Letter {
    let mut text = format!(
        "Kære Beboer {i},\n\nDin **nye** affaldsbeholder til Storegade {i} kommer *mandag*. Husk:\n\n- stil den gamle ud\n- husk låget\n"
    );
    for p in 0..paragraphs {
        text.push_str(&format!(
            "\nAfsnit {p}: Beholderen tømmes hver anden uge. Har du spørgsmål om ordningen, om tømningsdage eller om størrelsen på din beholder, er du velkommen til at kontakte Teknik og Miljø på telefon eller e-mail i vores åbningstid.\n"
        ));
    }
    Letter {
        address: vec![
            format!("Beboer {i}"),
            format!("Storegade {i}, 2. th."),
            "8000 Aarhus C".into(),
        ],
        subject: format!("Ny affaldsbeholder til Storegade {i}"),
        text,
        date: None,
        references: vec![("Sag".into(), format!("2026-{i:05}"))],
    }
}

/// The process's peak resident memory so far, in MB (Linux).
fn vm_hwm_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Renders one letter with its allocations counted: the PDF's size, its pages and the most
/// bytes it held at once.
fn counted(rt: &tokio::runtime::Runtime, r: &Renderer, l: &Letter) -> (usize, usize, u64) {
    let tag = local::memory::begin();
    let out = rt.block_on(local::memory::Tagged::new(tag, async {
        r.render(l).expect("the letter renders")
    }));
    (out.pdf.len(), out.pages, local::memory::peak(tag))
}

struct Row {
    kind: &'static str,
    pages: usize,
    pdf_kb: f64,
    per_second: f64,
    ms: f64,
    peak_mb: f64,
}

fn run(
    rt: &tokio::runtime::Runtime,
    kind: &'static str,
    r: &Renderer,
    paragraphs: usize,
    n: usize,
) -> Row {
    // Warm: the first letter of the layout is not timed.
    let (_, pages, _) = counted(rt, r, &letter(0, paragraphs));
    let started = Instant::now();
    let mut bytes = 0;
    for i in 1..=n {
        bytes += r.render(&letter(i, paragraphs)).expect("renders").pdf.len();
    }
    let took = started.elapsed();
    let mut peak = 0;
    for i in 0..20 {
        peak = peak.max(counted(rt, r, &letter(n + i, paragraphs)).2);
    }
    Row {
        kind,
        pages,
        pdf_kb: bytes as f64 / n as f64 / 1024.0,
        per_second: n as f64 / took.as_secs_f64(),
        ms: took.as_secs_f64() * 1000.0 / n as f64,
        peak_mb: peak as f64 / 1e6,
    }
}

fn main() {
    let n: usize = std::env::var("BENCH_LETTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let hwm_start = vm_hwm_mb();
    let plain = Renderer::new(layout(false));
    let cold = Instant::now();
    plain.render(&letter(0, 0)).expect("renders");
    let cold: Duration = cold.elapsed();
    let hwm_first = vm_hwm_mb();

    let one = run(&rt, "one page", &plain, 0, n);
    let hwm_one = vm_hwm_mb();
    let with_logo = Renderer::new(layout(true));
    let two = run(&rt, "two pages, logo", &with_logo, 9, n);
    let hwm_two = vm_hwm_mb();
    // As many letters again: a process that goes on holds no more.
    for i in 0..n {
        with_logo.render(&letter(10_000 + i, 9)).expect("renders");
    }
    let hwm_more = vm_hwm_mb();

    // A print part: 500 letters typeset as one document, written as one PDF.
    let part_of = |paragraphs: usize| -> Vec<Letter> {
        (0..500).map(|i| letter(20_000 + i, paragraphs)).collect()
    };
    let mut parts = Vec::new();
    for (kind, r, paragraphs) in [
        ("500 one-page letters", &plain, 0),
        ("500 two-page letters, logo", &with_logo, 9),
    ] {
        let run = part_of(paragraphs);
        let tag = local::memory::begin();
        let started = Instant::now();
        let out = rt.block_on(local::memory::Tagged::new(tag, async {
            r.render_run("print part", &run).expect("the part renders")
        }));
        parts.push((
            kind,
            out.pages,
            out.pdf.len(),
            started.elapsed(),
            local::memory::peak(tag),
        ));
    }
    let hwm_parts = vm_hwm_mb();

    println!("\nLetters, {n} of each kind, one thread, warm (release-like bench profile)\n");
    println!("| letter | pages | PDF size | letters per second | ms per letter | most held by one letter |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in [&one, &two] {
        println!(
            "| {} | {} | {:.1} KB | {:.1} | {:.1} | {:.1} MB |",
            r.kind, r.pages, r.pdf_kb, r.per_second, r.ms, r.peak_mb
        );
    }
    println!();
    println!("| process | figure |");
    println!("|---|---:|");
    println!(
        "| the first letter of a process (fonts parsed, library built, first layout) | {:.0} ms |",
        cold.as_secs_f64() * 1000.0
    );
    println!("| peak resident memory before the first letter | {hwm_start:.1} MB |");
    println!("| after the first letter | {hwm_first:.1} MB |");
    println!("| after {} one-page letters | {hwm_one:.1} MB |", n + 21);
    println!(
        "| after {} two-page letters more | {hwm_two:.1} MB |",
        n + 21
    );
    println!("| after {n} two-page letters more again | {hwm_more:.1} MB |");
    println!("| after the two print parts | {hwm_parts:.1} MB |");
    println!();
    println!("| print part | pages | PDF size | time | most held while it was made |");
    println!("|---|---:|---:|---:|---:|");
    for (kind, pages, size, took, peak) in parts {
        println!(
            "| {kind} | {pages} | {:.1} MB | {:.1} s | {:.0} MB |",
            size as f64 / 1e6,
            took.as_secs_f64(),
            peak as f64 / 1e6
        );
    }
}
