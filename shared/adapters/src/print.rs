//! Starting a build of a dispatch's print files: the checks, a new generation of the run,
//! and its job on the settle queue. The API starts one when an operator asks, the resume
//! function when a dispatch with letters completes.

use crate::dynamodb::Store;
use domain::error::Result;
use domain::job::{Job, JobKind};
use domain::manifest::Manifest;
use domain::model::{now_rfc3339, Dispatch, DispatchState};
use domain::print::{PrintRun, PrintState};

/// Whether a dispatch's print files may be built now: `Err` says why not.
pub fn may_build(d: &Dispatch, run: Option<&PrintRun>) -> std::result::Result<(), String> {
    if d.counts.created == 0 {
        return Err("the dispatch has no letters produced: there is nothing to print".into());
    }
    if !matches!(
        d.state,
        DispatchState::Completed | DispatchState::CompletedWithErrors | DispatchState::Closed
    ) {
        return Err(format!(
            "print files are built once every letter is produced; the dispatch is {}",
            d.state
        ));
    }
    match run.map(|r| r.state) {
        Some(PrintState::Closed) => {
            Err("the letter run is closed: its print files cannot change".into())
        }
        Some(PrintState::Building) => Err(format!(
            "print files are being built (job {})",
            run.map(|r| r.job_id.as_str()).unwrap_or_default()
        )),
        _ => Ok(()),
    }
}

/// Starts generation n+1 of the dispatch's print files (1 for the first), sorted and cut in
/// parts as its manifest says: the run is written as building and its job handed to the
/// worker. `Ok(Err(why))` when it may not be built now.
pub async fn start(
    store: &Store,
    sqs: &aws_sdk_sqs::Client,
    settle_queue_url: &str,
    d: &Dispatch,
    manifest: &Manifest,
    by: &str,
) -> Result<std::result::Result<(Job, PrintRun), String>> {
    let Some(letter) = manifest.letter.as_ref() else {
        return Ok(Err(
            "the dispatch sends no letters: there is nothing to print".into(),
        ));
    };
    let before = store.get_print(&d.id).await?;
    if let Err(why) = may_build(d, before.as_ref()) {
        return Ok(Err(why));
    }
    let generation = before.as_ref().map_or(1, |r| r.generation + 1);
    let job = Job::new(
        &d.id,
        JobKind::Print { generation },
        by,
        uuid::Uuid::new_v4().simple().to_string(),
    );
    let run = PrintRun {
        dispatch_id: d.id.clone(),
        generation,
        state: PrintState::Building,
        job_id: job.id.clone(),
        sort_by: letter.sort_columns(&manifest.columns),
        part_letters: letter.letters_per_part(),
        letters: 0,
        parts: Vec::new(),
        requested_by: by.to_string(),
        started_at: now_rfc3339(),
        built_at: None,
        closed_at: None,
        closed_by: None,
    };
    store.put_job(&job).await?;
    // Only over a run that is as it was read: two starts at once make one build.
    let expected = before.as_ref().map(|r| r.state);
    match store.put_print(&run, expected).await {
        Ok(()) => {}
        Err(domain::Error::Conflict(why)) => return Ok(Err(why)),
        Err(e) => return Err(e),
    }
    crate::sqs::send_job(sqs, settle_queue_url, &d.id, &job.id, (0, None)).await?;
    Ok(Ok((job, run)))
}
