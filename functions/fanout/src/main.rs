//! Lambda entry point: configuration and clients once, then the runtime loop.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    adapters::clients::init_tracing();
    let config = domain::config::Config::from_env()?;
    let clients = adapters::clients::Clients::new(&adapters::clients::sdk_config().await);
    let deps = fanout::Deps::new(config, &clients);
    let deps = &deps;
    run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
        let deadline = domain::Deadline::at_unix_ms(event.context.deadline);
        fanout::handle(deps, event.payload, deadline)
            .await
            .map_err(Error::from)
    }))
    .await
}
