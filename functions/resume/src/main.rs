//! Lambda entry point: configuration and clients once, then the runtime loop. The function
//! has two triggers: the schedule (an EventBridge event) and the settle queue (SQS records).

use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    adapters::clients::init_tracing();
    let config = domain::config::Config::from_env()?;
    let clients = adapters::clients::Clients::new(&adapters::clients::sdk_config().await);
    let deps = resume::Deps::new(config, &clients);
    let deps = &deps;
    run(service_fn(
        |event: LambdaEvent<resume::Trigger>| async move {
            let deadline = domain::Deadline::at_unix_ms(event.context.deadline);
            resume::on_event(deps, event.payload, deadline)
                .await
                .map_err(Error::from)
        },
    ))
    .await
}
