//! Jobs, one item each beside their dispatch (`D#<id>#JOBS`, `JOB#<job id>`), the job as a
//! JSON document: only the job's own API and worker read it.

use crate::dynamodb::{s, Store};
use domain::error::{Error, Result};
use domain::job::Job;

fn jobs_pk(dispatch_id: &str) -> String {
    format!("D#{dispatch_id}#JOBS")
}

fn job_sk(job_id: &str) -> String {
    format!("JOB#{job_id}")
}

impl Store {
    /// Writes a job as it now is.
    pub async fn put_job(&self, job: &Job) -> Result<()> {
        let doc = serde_json::to_string(job).map_err(|e| Error::Malformed(e.to_string()))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(jobs_pk(&job.dispatch_id)))
            .item("sk", s(job_sk(&job.id)))
            .item("job", s(doc))
            .send()
            .await
            .map_err(Error::aws("PutItem"))?;
        Ok(())
    }

    /// A job of a dispatch, if there is one by that id.
    pub async fn get_job(&self, dispatch_id: &str, job_id: &str) -> Result<Option<Job>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(jobs_pk(dispatch_id)))
            .key("sk", s(job_sk(job_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(Error::aws("GetItem"))?;
        out.item()
            .and_then(|i| i.get("job"))
            .and_then(|v| v.as_s().ok())
            .map(|doc| {
                serde_json::from_str(doc)
                    .map_err(|e| Error::Malformed(format!("job {job_id}: {e}")))
            })
            .transpose()
    }
}
