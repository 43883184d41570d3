//! Lambda entry point: configuration and clients once, then the runtime loop.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::aws::init_tracing();
    let config = shared::config::Config::from_env()?;
    let clients = shared::aws::Clients::new(&shared::aws::sdk_config().await);
    let deps = receipts::Deps::new(config, &clients);
    run(service_fn(|event: LambdaEvent<SqsEvent>| async {
        receipts::handle(&deps, event.payload)
            .await
            .map_err(Error::from)
    }))
    .await
}
