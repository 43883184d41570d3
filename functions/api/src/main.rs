//! Lambda entry point: configuration and clients once, then the router behind `lambda_http`.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::aws::init_tracing();
    let config = shared::config::Config::from_env()?;
    let clients = shared::aws::Clients::new(&shared::aws::sdk_config().await);
    let deps = Arc::new(api::Deps::new(config, &clients));
    lambda_http::run(api::router(deps)).await
}
