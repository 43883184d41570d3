//! Lambda entry point: configuration and clients once, then the router behind `lambda_http`.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    adapters::clients::init_tracing();
    let config = domain::config::Config::from_env()?;
    let clients = adapters::clients::Clients::new(&adapters::clients::sdk_config().await);
    let deps = Arc::new(api::Deps::new(config, &clients));
    lambda_http::run(api::router(deps)).await
}
