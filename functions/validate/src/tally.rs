//! What the rows came to: counts, report lines, samples, SMS lengths and the summary.

use crate::*;

/// Where the results of checked rows go.
pub(crate) struct Tally<'a> {
    pub(crate) counts: &'a mut Counts,
    pub(crate) report: &'a mut CsvFile,
    pub(crate) by_code: &'a mut BTreeMap<&'static str, u64>,
    pub(crate) by_channel: &'a mut BTreeMap<&'static str, u64>,
    pub(crate) first_problems: &'a mut Vec<Problem>,
    pub(crate) samples: &'a mut Samples,
    pub(crate) sms: &'a mut SmsLength,
}

impl Tally<'_> {
    pub(crate) fn add(&mut self, checked: &Checked) {
        for p in &checked.problems {
            *self.by_code.entry(p.code).or_default() += 1;
            documents::report::report_line(self.report, p);
            if self.first_problems.len() < SUMMARY_PROBLEMS {
                self.first_problems.push(p.clone());
            }
        }
        for n in &checked.notices {
            *self.by_code.entry(n.code).or_default() += 1;
            documents::report::report_line(self.report, n);
        }
        let r = &checked.recipient;
        match r.state {
            RecipientState::Pending => {
                self.counts.valid += 1;
                if let Some(c) = r.channel {
                    *self.by_channel.entry(c.as_str()).or_default() += 1;
                }
                self.samples.offer(r);
                if let Some(s) = checked.segments {
                    self.sms.add(s);
                }
            }
            RecipientState::Excluded => self.counts.excluded += 1,
            _ => self.counts.invalid += 1,
        }
    }
}

/// How long the SMS messages of the valid rows are, in segments (what providers charge).
#[derive(Debug, Default, Serialize)]
pub struct SmsLength {
    pub messages: u64,
    pub segments: u64,
    pub max_segments: u64,
    /// Messages that need UCS-2 (characters outside the GSM alphabet): 70 characters each.
    pub ucs2_messages: u64,
}

impl SmsLength {
    pub(crate) fn add(&mut self, s: intake::sms::Segments) {
        self.messages += 1;
        self.segments += s.segments as u64;
        self.max_segments = self.max_segments.max(s.segments as u64);
        if s.encoding == intake::sms::Encoding::Ucs2 {
            self.ucs2_messages += 1;
        }
    }
}

/// The recipients whose messages are shown before approval: per channel the first valid one
/// and a few others chosen uniformly at random among the rest (reservoir sampling, one pass).
#[derive(Default)]
pub(crate) struct Samples {
    pub(crate) per_channel: BTreeMap<Channel, ChannelSamples>,
}

#[derive(Default)]
pub(crate) struct ChannelSamples {
    pub(crate) first: Option<domain::model::Recipient>,
    pub(crate) others: Vec<domain::model::Recipient>,
    /// Valid recipients after the first.
    pub(crate) seen: usize,
}

impl Samples {
    pub(crate) fn offer(&mut self, r: &domain::model::Recipient) {
        use rand::Rng;
        let Some(ch) = r.channel else { return };
        let c = self.per_channel.entry(ch).or_default();
        if c.first.is_none() {
            c.first = Some(r.clone());
            return;
        }
        c.seen += 1;
        if c.others.len() < RANDOM_SAMPLES {
            c.others.push(r.clone());
        } else {
            let slot = rand::rng().random_range(0..c.seen);
            if let Some(s) = c.others.get_mut(slot) {
                *s = r.clone();
            }
        }
    }

    /// The rendered messages, per channel: the first valid recipient's, then the others in
    /// list order.
    pub(crate) fn render(self, t: &MessageTemplate) -> BTreeMap<Channel, Vec<Sample>> {
        self.per_channel
            .into_iter()
            .map(|(ch, c)| {
                let mut others = c.others;
                others.sort_by_key(|r| r.line);
                let samples = c
                    .first
                    .into_iter()
                    .map(|r| (true, r))
                    .chain(others.into_iter().map(|r| (false, r)))
                    .map(|(first, r)| sample(t, ch, first, &r))
                    .collect();
                (ch, samples)
            })
            .collect()
    }
}

/// Applies the suppression list to checked rows, counts and reports them, and stores them.
pub(crate) async fn flush(
    deps: &Deps,
    d: &Dispatch,
    columns: &domain::manifest::Columns,
    buffer: &mut Vec<Checked>,
    tally: &mut Tally<'_>,
) -> Result<()> {
    if buffer.is_empty() {
        return Ok(());
    }
    // The addresses of the valid rows, and of the later channels of their fallback order.
    let addresses: Vec<String> = buffer
        .iter()
        .filter(|c| c.recipient.state == RecipientState::Pending)
        .flat_map(|c| {
            c.recipient
                .address
                .iter()
                .cloned()
                .chain(c.recipient.fallbacks.iter().map(|f| f.address.clone()))
        })
        .collect();
    let suppressed = deps.store.suppressed(&addresses).await?;
    let mut rows = Vec::with_capacity(buffer.len());
    for mut checked in buffer.drain(..) {
        if checked.recipient.state == RecipientState::Pending {
            let entry = checked
                .recipient
                .address
                .as_deref()
                .and_then(|a| suppressed.get(&suppression_key(a)));
            if let Some(entry) = entry {
                // A suppressed address goes by the next channel of the order that is not.
                let next = checked
                    .recipient
                    .fallbacks
                    .iter()
                    .position(|f| !suppressed.contains_key(&suppression_key(&f.address)));
                match next {
                    Some(i) => {
                        validation::fall_back_from_suppressed(&mut checked, i, entry, columns)
                    }
                    None => validation::exclude_suppressed(&mut checked, entry, columns),
                }
            }
        }
        tally.add(&checked);
        let key = recipient_key(&checked.recipient, checked.keyed_by_id, d.shards);
        rows.push((key, checked.recipient));
    }
    deps.store.put_recipients(&rows).await
}

/// Counts per problem code and the first problems; the API shows it with the dispatch.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub dispatch_id: String,
    pub title: String,
    pub total: u64,
    pub valid: u64,
    pub invalid: u64,
    /// Valid rows left out by exclusions (the suppression list).
    pub excluded: u64,
    pub problems_by_code: BTreeMap<&'static str, u64>,
    /// Valid rows by the channel they go by (after any fallback).
    pub valid_by_channel: BTreeMap<&'static str, u64>,
    pub first_problems: Vec<Problem>,
    pub merge_fields: Vec<String>,
    /// Validation attempt (1, then one more per corrected package).
    pub attempt: u32,
    /// The text encoding a CSV list was read in.
    pub encoding: Option<String>,
    /// Length of the SMS messages of valid rows.
    pub sms: SmsLength,
}

/// A rendered message for one valid recipient, shown to the approver.
#[derive(Debug, Serialize)]
pub(crate) struct Sample {
    pub(crate) recipient_id: String,
    pub(crate) line: u64,
    pub(crate) to: String,
    /// "first" (the first valid recipient) or "random".
    pub(crate) chosen: &'static str,
    #[serde(flatten)]
    pub(crate) body: SampleBody,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum SampleBody {
    Email {
        message: RenderedEmail,
    },
    Sms {
        message: RenderedSms,
        segments: intake::sms::Segments,
    },
    Letter {
        message: RenderedLetter,
        /// The sample letter's PDF in the reports bucket, once typeset.
        document: Option<String>,
        pages: usize,
    },
    Unrenderable {
        error: String,
    },
}

pub(crate) fn sample(
    t: &MessageTemplate,
    ch: Channel,
    first: bool,
    r: &domain::model::Recipient,
) -> Sample {
    let body = match ch {
        Channel::Email => t
            .render_email(&r.fields)
            .map(|message| SampleBody::Email { message }),
        Channel::Sms => t.render_sms(&r.fields).map(|message| SampleBody::Sms {
            segments: intake::sms::segments(&message.text),
            message,
        }),
        Channel::Letter => t
            .render_letter(&r.fields)
            .map(|message| SampleBody::Letter {
                message,
                document: None,
                pages: 0,
            }),
    };
    Sample {
        recipient_id: r.recipient_id.clone(),
        line: r.line,
        to: r.address.clone().unwrap_or_default(),
        chosen: if first { "first" } else { "random" },
        body: body.unwrap_or_else(|e| SampleBody::Unrenderable {
            error: e.to_string(),
        }),
    }
}

/// Writes the example file (the header the list must have) as CSV and XLSX.
pub(crate) async fn write_example(
    deps: &Deps,
    id: &str,
    m: &Manifest,
    template: &MessageTemplate,
) -> Result<()> {
    let columns = documents::example::columns(m, template);
    deps.docs
        .put_report_document(
            &keys::example(id, "csv"),
            documents::example::csv(&columns),
            "text/csv; charset=utf-8",
        )
        .await?;
    match documents::example::xlsx(&columns) {
        Ok(bytes) => {
            deps.docs
                .put_report_document(
                    &keys::example(id, "xlsx"),
                    bytes,
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                )
                .await
        }
        Err(e) => {
            tracing::error!(dispatch = %id, error = %e, "the example workbook could not be made");
            Ok(())
        }
    }
}
