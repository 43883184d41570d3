//! The engine's ports built on AWS, once per process.

use crate::channels::{Mailer, SmsSender};
use crate::clients::Clients;
use crate::dynamodb::rates::SharedRates;
use crate::dynamodb::Store;
use crate::notify::Notifier;
use crate::s3::Documents;
use domain::config::Config;
use engine::completion::{Completer, CompletionPorts};
use engine::send::SendPorts;
use std::sync::Arc;

/// What the senders work with: the table's ledger, dispatches and shared rates, SES and SNS,
/// the frozen packages in the reports bucket, completion and operator notifications.
pub fn send_ports(clients: &Clients, config: &Config) -> SendPorts {
    let store = Arc::new(Store::from_config(clients, config));
    let docs = Arc::new(Documents::from_config(clients, config));
    SendPorts {
        ledger: store.clone(),
        dispatches: store.clone(),
        keys: store.clone(),
        slots: Arc::new(SharedRates::new(&store)),
        mailer: Arc::new(Mailer::new(
            clients.sesv2.clone(),
            config.ses_configuration_set.clone(),
        )),
        texter: Arc::new(SmsSender::new(clients.sns.clone())),
        press: Arc::new(crate::letters::Press::new((*docs).clone())),
        packages: docs.clone(),
        // Where there is a settle queue the resume function completes dispatches, with the
        // time and disk a whole-dispatch pass needs; without one the sender does.
        completion: match &config.settle_queue_url {
            Some(queue) => Arc::new(crate::sqs::SettleHandOff::new(
                clients.sqs.clone(),
                queue.clone(),
            )),
            None => Arc::new(completer_on(&store, &docs)),
        },
        notices: Arc::new(Notifier::from_config(clients, config)),
        metrics: Arc::new(crate::metrics::EmfMetrics::new("send")),
        queue: Arc::new(crate::sqs::SendQueue::new(
            clients.sqs.clone(),
            config.send_queue_url.clone(),
        )),
    }
}

/// Completion on the table (dispatches, recipients, audit trail, stale marks) and the
/// reports bucket.
pub fn completer(clients: &Clients, config: &Config) -> Completer {
    completer_on(
        &Arc::new(Store::from_config(clients, config)),
        &Arc::new(Documents::from_config(clients, config)),
    )
}

fn completer_on(store: &Arc<Store>, docs: &Arc<Documents>) -> Completer {
    Completer::new(CompletionPorts {
        dispatches: store.clone(),
        recipients: store.clone(),
        audit: store.clone(),
        documents: docs.clone(),
        stale: store.clone(),
    })
}
