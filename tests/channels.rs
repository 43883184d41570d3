//! How the email channel sorts connection failures, against real sockets: a connection that
//! never opened may be tried again; one that broke after the request went out leaves the
//! outcome unknown (the provider may have taken the message).

use adapters::channels::Mailer;
use aws_sdk_sesv2::config::{BehaviorVersion, Credentials, Region};
use engine::ports::SendError;
use intake::template::RenderedEmail;
use tokio::io::AsyncReadExt;

fn mailer(port: u16) -> Mailer {
    let conf = aws_sdk_sesv2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new("id", "secret", None, None, "test"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    Mailer::new(aws_sdk_sesv2::Client::from_conf(conf), None)
}

fn email() -> RenderedEmail {
    RenderedEmail {
        from: "a@example.org".into(),
        subject: "s".into(),
        text: "t".into(),
        html: None,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_connection_that_never_opened_may_be_tried_again() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = mailer(port)
        .send("b@example.net", &email(), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn a_connection_that_broke_after_the_request_leaves_the_outcome_unknown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        // Read the request, then hang up without an answer.
        let _ = conn.read(&mut buf).await;
        drop(conn);
    });
    let err = mailer(port)
        .send("b@example.net", &email(), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Unknown(_)), "{err:?}");
}
