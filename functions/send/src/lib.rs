//! Send: delivers batches of recipients by email (SES v2) or SMS (SNS). The protocol (claim,
//! send, record; pacing; throttles, faults and the dead-letter queue) is
//! [`engine::send`]; this function hands it the queue's messages and answers SQS with the
//! ones that must come again.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use domain::config::Config;
use domain::Error;
use engine::send::{Delivery, SendSettings, Sender};

pub struct Deps {
    pub sender: Sender,
}

impl Deps {
    pub fn new(config: Config, clients: &adapters::clients::Clients) -> Deps {
        Deps::on(adapters::wiring::send_ports(clients, &config), &config)
    }

    /// A sender on ports built elsewhere (the local runtime's metrics go to a file).
    pub fn on(ports: engine::send::SendPorts, config: &Config) -> Deps {
        Deps {
            sender: Sender::new(ports, SendSettings::from(config)),
        }
    }
}

/// Handles one invocation's messages; `deadline` is when Lambda ends the invocation, and
/// nothing is claimed that cannot be sent before it.
pub async fn handle(
    deps: &Deps,
    event: SqsEvent,
    deadline: domain::Deadline,
) -> Result<SqsBatchResponse, Error> {
    let deliveries = event
        .records
        .into_iter()
        .map(|record| Delivery {
            receives: adapters::sqs::receive_count(&record),
            message_id: record.message_id.unwrap_or_default(),
            body: record.body.unwrap_or_default(),
        })
        .collect();
    let again = deps.sender.handle(deliveries, deadline).await;
    Ok(adapters::sqs::batch_response(again))
}
