//! Each function runs under its own role from the template, and the emulator enforces IAM as
//! AWS does: what a role grants passes, the rest is refused, and a missing S3 key is told
//! apart from a refusal only for a role that may list the bucket.

use aws_sdk_dynamodb::types::AttributeValue;
use local::runtime::Options;
use local::Local;

fn denied<E: std::fmt::Debug>(e: &E) -> bool {
    let text = format!("{e:?}");
    text.contains("AccessDenied") || text.contains("403")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_may_do_what_its_role_grants_and_nothing_more() {
    let local = Local::start(Options {
        senders: Some(0),
        ..Options::default()
    })
    .await
    .unwrap();
    let config = &local.system.config;
    let send = local.system.clients_of("SendFunction").unwrap();
    let fanout = local.system.clients_of("FanoutFunction").unwrap();
    let api = local.system.clients_of("ApiFunction").unwrap();
    let key = |pk: &str| {
        [
            ("pk".to_string(), AttributeValue::S(pk.into())),
            ("sk".to_string(), AttributeValue::S("dispatch".into())),
        ]
        .into_iter()
        .collect::<std::collections::HashMap<_, _>>()
    };

    // The sender reads the table; it may not delete from it nor write the uploads bucket.
    send.dynamodb
        .get_item()
        .table_name(&config.table_name)
        .set_key(Some(key("dispatch#none")))
        .send()
        .await
        .expect("GetItem is granted to the sender");
    let delete = send
        .dynamodb
        .delete_item()
        .table_name(&config.table_name)
        .set_key(Some(key("dispatch#none")))
        .send()
        .await;
    assert!(delete.as_ref().is_err_and(denied), "{delete:?}");
    let put = send
        .s3
        .put_object()
        .bucket(&config.uploads_bucket)
        .key("incoming/x/manifest.json")
        .body(b"{}".to_vec().into())
        .send()
        .await;
    assert!(put.as_ref().is_err_and(denied), "{put:?}");
    // Fan-out sends to the send queue but cannot send email.
    let email = fanout
        .sesv2
        .send_email()
        .from_email_address(format!(
            "x@{}",
            local.system.stack.output("SenderDomain").unwrap()
        ))
        .send()
        .await;
    assert!(email.as_ref().is_err_and(denied), "{email:?}");

    // A missing key: the API may list the reports bucket, so it is told the key is missing;
    // fan-out may not, and is refused as S3 refuses.
    let read_missing = |clients: &adapters::clients::Clients| {
        clients
            .s3
            .get_object()
            .bucket(&config.reports_bucket)
            .key("dispatches/none/summary.json")
            .send()
    };
    let err = read_missing(api).await.expect_err("there is no such key");
    assert!(
        err.as_service_error().is_some_and(|e| e.is_no_such_key()),
        "{err:?}"
    );
    let hidden = read_missing(fanout).await;
    assert!(hidden.as_ref().is_err_and(denied), "{hidden:?}");
}
