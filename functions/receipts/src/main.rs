//! Lambda entry point: configuration and clients once, then the runtime loop.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    adapters::clients::init_tracing();
    let config = domain::config::Config::from_env()?;
    let clients = adapters::clients::Clients::new(&adapters::clients::sdk_config().await);
    let deps = receipts::Deps::new(config, &clients);
    run(service_fn(|event: LambdaEvent<SqsEvent>| async {
        receipts::handle(&deps, event.payload)
            .await
            .map_err(Error::from)
    }))
    .await
}
