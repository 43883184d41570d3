//! The print job: a dispatch's produced letters put together in print files. The first
//! message reads every letter record (a page at a time, the sort values and keys only), sorts
//! them as the manifest says and keeps the order in the reports bucket; then each part (at
//! most `part_letters` letters) is typeset as one PDF with a CSV index (part, page, recipient,
//! address), written, hashed and added to the run, continuing in a new message when the
//! invocation's time runs short. A build deletes the files of the build before it.

use crate::{settle_queue, Deps, Pages, PASS_PAGE};
use adapters::sqs;
use documents::keys;
use domain::job::{Job, JobState};
use domain::keys::RecipientKey;
use domain::model::{now_rfc3339, Dispatch, RecipientState};
use domain::print::{sort_cmp, PrintPart, PrintRun, PrintState};
use domain::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Time a part needs at most (a part of 5,000 letters typesets in about 20 s here), kept
/// free before the deadline before another part is begun.
const PART_TIME: std::time::Duration = std::time::Duration::from_secs(90);

/// One letter in print order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    shard: u32,
    sk: String,
    recipient_id: String,
    sort: Vec<String>,
}

fn order_key(id: &str, generation: u32) -> String {
    format!("{}order.json", keys::print_prefix(id, generation))
}

/// Builds generation `generation` from part `from` (0: from the start); false when it goes on
/// in a new message.
pub(crate) async fn build(
    deps: &Deps,
    d: &Dispatch,
    job: &mut Job,
    generation: u32,
    from: u32,
    deadline: domain::Deadline,
) -> Result<bool> {
    let Some(mut run) = deps.store.get_print(&d.id).await? else {
        job.finish(JobState::Failed, "the dispatch has no print run".into());
        return Ok(true);
    };
    if run.generation != generation || run.state != PrintState::Building {
        job.finish(
            JobState::Failed,
            format!(
                "build {generation} was replaced: the print run is at build {} ({:?})",
                run.generation, run.state
            ),
        );
        return Ok(true);
    }
    let package = deps.docs.package(&d.id).await?;
    let Some(source) = package.template.letter.clone() else {
        return fail(
            deps,
            d,
            job,
            &mut run,
            "the dispatch's package has no letter".into(),
        )
        .await;
    };
    let template = intake::template::MessageTemplate::compile(package.template.clone())
        .map_err(|e| Error::Malformed(e.to_string()))?;
    let layout = match adapters::letters::layout_of(&source.layout) {
        Ok(l) => l,
        Err(why) => return fail(deps, d, job, &mut run, why).await,
    };
    let renderer = letters::Renderer::new(layout);

    let order: Vec<Entry> = if from == 0 {
        if generation > 1 {
            deps.docs
                .delete_report_documents(&keys::print_prefix(&d.id, generation - 1))
                .await?;
        }
        // A generation begun again (a message delivered twice) starts clean.
        deps.docs
            .delete_report_documents(&keys::print_prefix(&d.id, generation))
            .await?;
        let mut order = Vec::new();
        let mut pages = Pages::from(d.shards, (0, None));
        while let Some((shard, after)) = pages.next_query() {
            let page = deps
                .store
                .query_shard(
                    &d.id,
                    shard,
                    Some(RecipientState::Created),
                    after,
                    PASS_PAGE,
                )
                .await?;
            pages.reached(page.next.clone());
            job.looked_at += page.recipients.len() as u64;
            order.extend(page.recipients.into_iter().map(|(k, r)| Entry {
                shard: k.shard,
                sk: k.sk,
                recipient_id: r.recipient_id,
                sort: r.print_sort,
            }));
        }
        order.sort_by(|a, b| {
            sort_cmp(&a.sort, &b.sort)
                .then_with(|| a.recipient_id.cmp(&b.recipient_id))
                .then_with(|| a.sk.cmp(&b.sk))
        });
        let body = serde_json::to_vec(&order).map_err(|e| Error::Malformed(e.to_string()))?;
        deps.docs
            .put_report_document(&order_key(&d.id, generation), body, "application/json")
            .await?;
        run.letters = order.len() as u64;
        run.parts.clear();
        order
    } else {
        let body = deps
            .docs
            .report_document(&order_key(&d.id, generation))
            .await?
            .ok_or_else(|| Error::NotFound(order_key(&d.id, generation)))?;
        serde_json::from_slice(&body).map_err(|e| Error::Malformed(e.to_string()))?
    };
    if order.is_empty() {
        return fail(
            deps,
            d,
            job,
            &mut run,
            "no letter of the dispatch was produced".into(),
        )
        .await;
    }

    let per = run.part_letters.max(1) as usize;
    for (p, chunk) in order.chunks(per).enumerate().skip(from as usize) {
        let part = p as u32 + 1;
        if p > from as usize && deadline.remaining() < crate::MARGIN + PART_TIME {
            deps.store
                .put_print(&run, Some(PrintState::Building))
                .await?;
            job.updated_at = now_rfc3339();
            deps.store.put_job(job).await?;
            // The part to go on from, in the job message's shard.
            let from = (p as u32, None);
            sqs::send_job(&deps.sqs, settle_queue(deps)?, &d.id, &job.id, from).await?;
            return Ok(false);
        }
        let keys_of: Vec<RecipientKey> = chunk
            .iter()
            .map(|e| RecipientKey {
                shard: e.shard,
                sk: e.sk.clone(),
            })
            .collect();
        let found: HashMap<String, domain::model::Recipient> = deps
            .store
            .recipients_by_keys(&d.id, &keys_of)
            .await?
            .into_iter()
            .map(|(k, r)| (k.sk, r))
            .collect();
        let mut run_letters = Vec::with_capacity(chunk.len());
        let mut rows = Vec::with_capacity(chunk.len());
        for e in chunk {
            let Some(r) = found.get(&e.sk) else {
                return fail(
                    deps,
                    d,
                    job,
                    &mut run,
                    format!("the letter of {} is gone", e.recipient_id),
                )
                .await;
            };
            let address = r.address.clone().unwrap_or_default();
            let rendered = match template.render_letter(&r.fields) {
                Ok(x) => x,
                Err(why) => {
                    return fail(
                        deps,
                        d,
                        job,
                        &mut run,
                        format!(
                            "the letter of {} cannot be filled in: {why}",
                            e.recipient_id
                        ),
                    )
                    .await
                }
            };
            rows.push((e.recipient_id.clone(), address.replace('\n', ", ")));
            run_letters.push(adapters::letters::letter_of(&address, &rendered));
        }
        let title = format!("{}: print part {part}", d.title);
        let out = match adapters::letters::render_run(renderer.clone(), title, run_letters).await {
            Ok(out) => out,
            Err(why) => return fail(deps, d, job, &mut run, why.to_string()).await,
        };
        let mut index = documents::csvout::CsvDoc::to_writer(
            Vec::new(),
            &["part", "page", "pages", "recipient_id", "address"],
        );
        for (i, (rid, address)) in rows.iter().enumerate() {
            let start = out.starts.get(i).copied().unwrap_or(0);
            let end = out.starts.get(i + 1).copied().unwrap_or(out.pages + 1);
            index.row([
                part.to_string(),
                start.to_string(),
                (end.saturating_sub(start)).to_string(),
                rid.clone(),
                address.clone(),
            ]);
        }
        let index = index.finish();
        let pdf_key = keys::print_part(&d.id, generation, part, "pdf");
        let index_key = keys::print_part(&d.id, generation, part, "csv");
        let pdf_sha256 = hex::encode(Sha256::digest(&out.pdf));
        let index_sha256 = hex::encode(Sha256::digest(&index));
        deps.docs
            .put_report_document(&pdf_key, out.pdf, "application/pdf")
            .await?;
        deps.docs
            .put_report_document(&index_key, index, "text/csv; charset=utf-8")
            .await?;
        run.parts.retain(|x| x.part != part);
        run.parts.push(PrintPart {
            part,
            letters: chunk.len() as u32,
            pages: out.pages as u32,
            pdf_key,
            index_key,
            pdf_sha256,
            index_sha256,
        });
        job.done = run.parts.iter().map(|x| u64::from(x.letters)).sum();
        job.updated_at = now_rfc3339();
        deps.store
            .put_print(&run, Some(PrintState::Building))
            .await?;
        deps.store.put_job(job).await?;
    }
    run.state = PrintState::Ready;
    run.built_at = Some(now_rfc3339());
    deps.store
        .put_print(&run, Some(PrintState::Building))
        .await?;
    let outcome = format!(
        "print files built (build {generation}): {} letters in {} parts of at most {}",
        run.letters,
        run.parts.len(),
        run.part_letters
    );
    deps.store
        .audit_or_log(&d.id, &job.requested_by, "print", &outcome)
        .await;
    job.finish(JobState::Succeeded, outcome);
    Ok(true)
}

async fn fail(
    deps: &Deps,
    d: &Dispatch,
    job: &mut Job,
    run: &mut PrintRun,
    why: String,
) -> Result<bool> {
    mark_failed(deps, run).await;
    let outcome = format!("print files not built: {why}");
    deps.store
        .audit_or_log(&d.id, &job.requested_by, "print", &outcome)
        .await;
    job.finish(JobState::Failed, outcome);
    Ok(true)
}

/// A build that will not go on leaves the run failed (so that it may be built again).
pub(crate) async fn mark_failed(deps: &Deps, run: &mut PrintRun) {
    run.state = PrintState::Failed;
    if let Err(e) = deps.store.put_print(run, Some(PrintState::Building)).await {
        tracing::error!(dispatch = %run.dispatch_id, error = %e, "print run not marked failed");
    }
}
