//! Lambda entry point: configuration and clients once, then the runtime loop.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::aws::init_tracing();
    let config = shared::config::Config::from_env()?;
    let clients = shared::aws::Clients::new(&shared::aws::sdk_config().await);
    let deps = validate::Deps::new(config, &clients);
    shared::validation::warm_up();
    run(service_fn(|event: LambdaEvent<SqsEvent>| async {
        validate::handle(&deps, event.payload)
            .await
            .map_err(Error::from)
    }))
    .await
}
