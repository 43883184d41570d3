//! The package read and judged: manifest, templates, and every row of the list.

use crate::*;

pub(crate) enum Outcome {
    /// The package cannot be sent; nothing was stored for its rows.
    Failed {
        title: String,
        problems: Vec<String>,
    },
    /// Every row was checked and stored.
    Checked {
        title: String,
        counts: Counts,
        report_key: String,
        sample_key: String,
        package_key: String,
        list_sha256: String,
        template_sha256: String,
    },
}

pub(crate) fn failed(title: &str, problem: impl Into<String>) -> Outcome {
    Outcome::Failed {
        title: title.to_string(),
        problems: vec![problem.into()],
    }
}

/// Reads one text file of the package; `Err(problem)` when it is missing or unusable.
pub(crate) async fn package_text(
    deps: &Deps,
    bucket: &str,
    prefix: &str,
    name: &str,
    what: &str,
) -> Result<Result<String, String>> {
    let key = format!("{prefix}{name}");
    Ok(
        match deps.docs.fetch(bucket, &key, MAX_TEMPLATE_BYTES).await? {
            Fetched::Missing => Err(format!(
                "the package has no file '{name}' ({what}); upload it before manifest.json"
            )),
            Fetched::TooLarge(size) => Err(format!(
                "'{name}' ({what}) is {size} bytes; at most {MAX_TEMPLATE_BYTES} are accepted"
            )),
            Fetched::Found(bytes) => match String::from_utf8(bytes) {
                Ok(t) => Ok(t.strip_prefix('\u{feff}').unwrap_or(&t).to_string()),
                Err(_) => Err(format!("'{name}' ({what}) is not UTF-8 text")),
            },
        },
    )
}

pub(crate) async fn check_package(deps: &Deps, bucket: &str, d: &Dispatch) -> Result<Outcome> {
    let prefix = &d.source_prefix;
    let manifest_bytes = match deps
        .docs
        .fetch(
            bucket,
            &format!("{prefix}{}", manifest::MANIFEST_FILE),
            domain::limits::input::MANIFEST_BYTES as u64,
        )
        .await?
    {
        Fetched::Found(b) => b,
        Fetched::Missing => {
            return Ok(failed(
                &d.id,
                "manifest.json was removed before it could be read",
            ))
        }
        Fetched::TooLarge(size) => {
            return Ok(failed(
                &d.id,
                format!(
                    "manifest.json is {size} bytes; at most {} are accepted",
                    domain::limits::input::MANIFEST_BYTES
                ),
            ))
        }
    };
    let m = match Manifest::parse(&manifest_bytes) {
        Ok(m) => m,
        Err(e) => return Ok(failed(&d.id, e.to_string())),
    };
    let title = m.title.trim().to_string();

    // Templates: every missing or broken part is reported at once.
    let mut problems = Vec::new();
    let mut email = None;
    if let Some(e) = &m.email {
        let text = package_text(deps, bucket, prefix, &e.text, "email text").await?;
        let html = match &e.html {
            Some(h) => Some(package_text(deps, bucket, prefix, h, "email html").await?),
            None => None,
        };
        match (text, html.transpose()) {
            (Ok(text), Ok(html)) => {
                email = Some(EmailSource {
                    from: e.from.trim().to_string(),
                    subject: e.subject.clone(),
                    text,
                    html,
                    attachment: None,
                    attach_letter: e.attach_letter,
                    bcc: e.bcc.iter().map(|a| a.trim().to_string()).collect(),
                    reply_to: e.reply_to.iter().map(|a| a.trim().to_string()).collect(),
                    unsubscribe: e.unsubscribe,
                })
            }
            (t, h) => problems.extend(t.err().into_iter().chain(h.err())),
        }
        // The sender must be an identity of the account that may send (seed 002: the
        // operator picks one of them).
        match deps.senders.check(&e.from).await {
            adapters::senders::Verdict::Verified => {}
            adapters::senders::Verdict::Unverified(looked) => problems.push(format!(
                "email.from '{}' is not a verified sender of this account ({looked} is not a verified identity); GET /senders lists those that are",
                e.from.trim()
            )),
            adapters::senders::Verdict::Unknown(why) => {
                tracing::warn!(dispatch = %d.id, error = %why, "the sender's identity could not be looked up; sending will find out")
            }
        }
        if e.unsubscribe && deps.config.public_api_url.is_none() {
            problems.push(
                "email.unsubscribe needs the API's public address (PUBLIC_API_URL) configured for its links"
                    .to_string(),
            );
        }
        if let Some(name) = &e.attachment {
            match frozen_attachment(deps, bucket, prefix, name, &d.id).await? {
                Ok(file) => {
                    if let Some(email) = email.as_mut() {
                        email.attachment = Some(file);
                    }
                }
                Err(p) => problems.push(p),
            }
        }
    }
    let mut sms = None;
    if let Some(s) = &m.sms {
        match package_text(deps, bucket, prefix, &s.text, "sms text").await? {
            Ok(text) => {
                sms = Some(SmsSource {
                    text,
                    sender_id: s.sender_id.clone(),
                })
            }
            Err(p) => problems.push(p),
        }
    }
    let mut letter = None;
    if let Some(l) = &m.letter {
        match letter_source(deps, bucket, prefix, l).await? {
            Ok(source) => letter = Some(source),
            Err(p) => problems.extend(p),
        }
    }
    let list_key = format!("{prefix}{}", m.list);
    let list = match deps
        .docs
        .fetch_to_file(bucket, &list_key, deps.config.max_list_bytes)
        .await?
    {
        FetchedFile::Found(b) => Some(b),
        FetchedFile::Missing => {
            problems.push(format!(
                "the package has no recipient list '{}'; upload it before manifest.json",
                m.list
            ));
            None
        }
        FetchedFile::TooLarge(size) => {
            problems.push(format!(
                "the recipient list is {size} bytes; at most {} are accepted",
                deps.config.max_list_bytes
            ));
            None
        }
    };
    if !problems.is_empty() {
        return Ok(Outcome::Failed { title, problems });
    }
    let Some(list) = list else {
        return Ok(Outcome::Failed { title, problems });
    };
    let source = TemplateSource { email, sms, letter };
    let template = match MessageTemplate::compile(source.clone()) {
        Ok(t) => t,
        Err(e) => return Ok(failed(&title, e.to_string())),
    };
    write_example(deps, &d.id, &m, &template).await?;
    let list_sha256 = list.sha256.clone();
    let template_sha256 = hex::encode(Sha256::digest(
        serde_json::to_vec(&source).map_err(|e| Error::Malformed(e.to_string()))?,
    ));

    let list_size = list.size;
    let mut reader = match ListReader::open_listed(&m, Box::new(list.file)) {
        Ok(r) => r,
        Err(e) => return Ok(failed(&title, e.to_string())),
    };
    // A sheet's declared size is only a hint (spreadsheet programs declare formatting far
    // past the data): the row limit is enforced on the rows read.
    let headers = reader.headers().to_vec();
    let mut validator = match Validator::new(
        &d.id,
        &m,
        &template,
        &headers,
        &deps.config.default_phone_region,
    ) {
        Ok(v) => v,
        Err(problems) => return Ok(Outcome::Failed { title, problems }),
    };

    let mut counts = Counts::default();
    let local = |e: std::io::Error| Error::Aws {
        op: "writing the report to local disk",
        source: Box::new(e),
    };
    let mut report = CsvFile::temporary(&documents::report::REPORT_COLUMNS).map_err(local)?;
    let mut by_code: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut by_channel: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut first_problems: Vec<Problem> = Vec::new();
    let mut samples = Samples::default();
    let mut sms = SmsLength::default();
    let mut buffer: Vec<Checked> = Vec::with_capacity(FLUSH_EVERY);
    let mut tally = Tally {
        counts: &mut counts,
        report: &mut report,
        by_code: &mut by_code,
        by_channel: &mut by_channel,
        first_problems: &mut first_problems,
        samples: &mut samples,
        sms: &mut sms,
    };
    loop {
        validator.presize(&reader, list_size, tally.counts.total, deps.config.max_rows);
        let Some(row) = reader.next_row() else { break };
        tally.counts.total += 1;
        if tally.counts.total > deps.config.max_rows {
            return Ok(failed(
                &title,
                format!(
                    "the list has more than {} rows, the most accepted",
                    deps.config.max_rows
                ),
            ));
        }
        let checked = match row {
            Ok(row) => validator.check(&row),
            Err(e) => validator.unreadable(e.line, &e.message),
        };
        buffer.push(checked);
        if buffer.len() >= FLUSH_EVERY {
            flush(deps, d, &m.columns, &mut buffer, &mut tally).await?;
        }
    }
    flush(deps, d, &m.columns, &mut buffer, &mut tally).await?;
    if let Some(why) = reader.failure() {
        return Ok(failed(
            &title,
            format!("the workbook cannot be read: {why}"),
        ));
    }
    if counts.total == 0 {
        return Ok(failed(
            &title,
            "the recipient list has a header row but no recipients",
        ));
    }

    let report_key = keys::report(&d.id);
    let report_file = report.finish_file().map_err(local)?;
    deps.docs
        .put_report_file(&report_key, report_file.path(), "text/csv; charset=utf-8")
        .await?;
    let summary = Summary {
        dispatch_id: d.id.clone(),
        title: title.clone(),
        total: counts.total,
        valid: counts.valid,
        invalid: counts.invalid,
        excluded: counts.excluded,
        problems_by_code: by_code,
        valid_by_channel: by_channel,
        first_problems,
        merge_fields: template.all_fields().into_iter().collect(),
        attempt: d.attempt,
        encoding: reader.encoding().map(str::to_string),
        sms,
    };
    deps.docs.put_json(&keys::summary(&d.id), &summary).await?;
    let sample_key = keys::sample(&d.id);
    let mut samples = samples.render(&template);
    if let (Some(letters), Some(l)) = (samples.get_mut(&Channel::Letter), &source.letter) {
        write_sample_letters(deps, &d.id, &l.layout, letters).await?;
    }
    deps.docs.put_json(&sample_key, &samples).await?;
    let package_key = keys::package(&d.id);
    let package = Package {
        dispatch_id: d.id.clone(),
        manifest: m.clone(),
        template: source,
        list_key,
        list_sha256,
        template_sha256,
    };
    deps.docs.put_json(&package_key, &package).await?;
    Ok(Outcome::Checked {
        title,
        counts,
        report_key,
        sample_key,
        package_key,
        list_sha256: package.list_sha256,
        template_sha256: package.template_sha256,
    })
}

/// The email attachment: a PDF of the package, within the configured size, that opens
/// without a password; copied beside the frozen package under its hash, from where the
/// senders read it.
async fn frozen_attachment(
    deps: &Deps,
    bucket: &str,
    prefix: &str,
    name: &str,
    dispatch_id: &str,
) -> Result<Result<FrozenFile, String>> {
    let max = deps.config.email_attachment_max_bytes;
    let bytes = match deps
        .docs
        .fetch(bucket, &format!("{prefix}{name}"), max)
        .await?
    {
        Fetched::Found(b) => b,
        Fetched::Missing => {
            return Ok(Err(format!(
            "the package has no file '{name}' (email attachment); upload it before manifest.json"
        )))
        }
        Fetched::TooLarge(size) => {
            return Ok(Err(format!(
                "'{name}' (email attachment) is {size} bytes; at most {max} are accepted"
            )))
        }
    };
    if let Err(why) = intake::attachment::check_pdf(&bytes) {
        return Ok(Err(format!("'{name}' (email attachment) {why}")));
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let key = documents::keys::attachment(dispatch_id, &sha256);
    let size = bytes.len() as u64;
    deps.docs
        .put_report_document(&key, bytes, "application/pdf")
        .await?;
    Ok(Ok(FrozenFile {
        name: name.to_string(),
        key,
        sha256,
        bytes: size,
    }))
}

/// The letter's text and layout from the package: its text file, its logo (kept in the frozen
/// package), and a letter typeset once with no recipient, so that a text a letter cannot
/// hold or a logo that is not an image fails the package before any row is read.
async fn letter_source(
    deps: &Deps,
    bucket: &str,
    prefix: &str,
    l: &domain::manifest::LetterPart,
) -> Result<Result<LetterSource, Vec<String>>> {
    use base64::Engine as _;
    let mut problems = Vec::new();
    let text = match package_text(deps, bucket, prefix, &l.text, "letter text").await? {
        Ok(t) => Some(t),
        Err(p) => {
            problems.push(p);
            None
        }
    };
    let mut logo = None;
    if let Some(name) = &l.logo {
        let max = domain::limits::input::LOGO_BYTES;
        match deps
            .docs
            .fetch(bucket, &format!("{prefix}{name}"), max as u64)
            .await?
        {
            Fetched::Found(bytes) => {
                logo = Some((
                    name.clone(),
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                ))
            }
            Fetched::Missing => problems.push(format!(
                "the package has no file '{name}' (letter logo); upload it before manifest.json"
            )),
            Fetched::TooLarge(size) => problems.push(format!(
                "'{name}' (letter logo) is {size} bytes; at most {max} are accepted"
            )),
        }
    }
    let Some(text) = text else {
        return Ok(Err(problems));
    };
    if let Err(why) = letters::blocks(&text) {
        problems.push(format!("the letter text cannot be set: {why}"));
    }
    let layout = LetterLayout {
        lang: l
            .lang
            .clone()
            .unwrap_or_else(|| "en".into())
            .to_ascii_lowercase(),
        sender: l.sender.trim().to_string(),
        return_address: l.return_address.clone().unwrap_or_default(),
        letterhead: l.letterhead.clone(),
        logo,
        footer: l.footer.clone(),
        closing: l.closing.clone().unwrap_or_default(),
        signature: l.signature.clone(),
    };
    if problems.is_empty() {
        match adapters::letters::layout_of(&layout) {
            Ok(lay) => {
                let trial = letters::Letter {
                    address: vec!["–".into()],
                    subject: "–".into(),
                    text: "–".into(),
                    ..Default::default()
                };
                if let Err(e) = adapters::letters::render(letters::Renderer::new(lay), trial).await
                {
                    problems.push(format!(
                        "the letter layout cannot be typeset (is the logo an image of the kind its name says?): {e}"
                    ));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    Ok(Ok(LetterSource {
        subject: l.subject.clone(),
        text,
        layout,
    }))
}

/// Typesets each sample letter recipient's letter and writes it beside the samples; the
/// sample names its document.
async fn write_sample_letters(
    deps: &Deps,
    id: &str,
    layout: &LetterLayout,
    samples: &mut [Sample],
) -> Result<()> {
    let lay = match adapters::letters::layout_of(layout) {
        Ok(l) => l,
        Err(e) => {
            for s in samples.iter_mut() {
                s.body = SampleBody::Unrenderable { error: e.clone() };
            }
            return Ok(());
        }
    };
    let renderer = letters::Renderer::new(lay);
    for (n, s) in samples.iter_mut().enumerate() {
        let SampleBody::Letter {
            message,
            document,
            pages,
        } = &mut s.body
        else {
            continue;
        };
        let letter = adapters::letters::letter_of(&s.to, message);
        match adapters::letters::render(renderer.clone(), letter).await {
            Ok(r) => {
                let key = keys::sample_letter(id, n + 1);
                deps.docs
                    .put_report_document(&key, r.pdf, "application/pdf")
                    .await?;
                *document = Some(key);
                *pages = r.pages;
            }
            Err(e) => {
                s.body = SampleBody::Unrenderable {
                    error: e.to_string(),
                }
            }
        }
    }
    Ok(())
}
