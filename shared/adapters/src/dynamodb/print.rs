//! A dispatch's print run, one item beside the dispatch (`D#<id>`, `PRINT`), the run as a JSON
//! document; its state is an attribute of its own, so that a build and a close cannot cross.

use crate::dynamodb::{dispatch_pk, s, Store};
use aws_sdk_dynamodb::types::AttributeValue;
use domain::error::{Error, Result};
use domain::print::{PrintRun, PrintState};

const PRINT_SK: &str = "PRINT";

fn state_word(state: PrintState) -> &'static str {
    match state {
        PrintState::Building => "building",
        PrintState::Ready => "ready",
        PrintState::Failed => "failed",
        PrintState::Closed => "closed",
    }
}

impl Store {
    /// The dispatch's print run, if its print files were ever built.
    pub async fn get_print(&self, dispatch_id: &str) -> Result<Option<PrintRun>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(dispatch_pk(dispatch_id)))
            .key("sk", s(PRINT_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(Error::aws("GetItem"))?;
        out.item()
            .and_then(|i| i.get("run"))
            .and_then(|v| v.as_s().ok())
            .map(|doc| {
                serde_json::from_str(doc)
                    .map_err(|e| Error::Malformed(format!("print run of {dispatch_id}: {e}")))
            })
            .transpose()
    }

    /// Writes the run as it now is, only while the stored one is in state `from` (`None`:
    /// while there is none). `Conflict` otherwise.
    pub async fn put_print(&self, run: &PrintRun, from: Option<PrintState>) -> Result<()> {
        let doc = serde_json::to_string(run).map_err(|e| Error::Malformed(e.to_string()))?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(dispatch_pk(&run.dispatch_id)))
            .item("sk", s(PRINT_SK))
            .item("state", s(state_word(run.state)))
            .item("generation", AttributeValue::N(run.generation.to_string()))
            .item("run", s(doc));
        let put = match from {
            Some(state) => put
                .condition_expression("#state = :from")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":from", s(state_word(state))),
            None => put.condition_expression("attribute_not_exists(pk)"),
        };
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if crate::dynamodb::is_conditional_failure(&e) => Err(Error::Conflict(format!(
                "the print run of {} changed meanwhile",
                run.dispatch_id
            ))),
            Err(e) => Err(Error::aws("PutItem")(e)),
        }
    }
}
