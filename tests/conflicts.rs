//! The emulator answers DynamoDB's transaction conflicts as DynamoDB does
//! (`DYNAMODB_TRANSACTION_HOLD_MS`, on by default): while a transaction is being written, a
//! transaction touching one of its items is cancelled with `TransactionConflict` as that
//! item's reason, and a plain write to the item is refused with
//! `TransactionConflictException`. Once its answer is out, the items are free again.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TransactWriteItem, Update,
};
use local::emulator::Emulator;

fn add_one(table: &str, pk: &str) -> TransactWriteItem {
    TransactWriteItem::builder()
        .update(
            Update::builder()
                .table_name(table)
                .key("pk", AttributeValue::S(pk.into()))
                .update_expression("ADD n :one")
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .build()
                .unwrap(),
        )
        .build()
}

#[tokio::test]
async fn a_transaction_on_an_item_another_one_holds_is_cancelled_as_dynamodb_cancels_it() {
    let emulator = Emulator::start_with(&[("DYNAMODB_TRANSACTION_HOLD_MS", "2000")])
        .await
        .unwrap();
    let db = aws_sdk_dynamodb::Client::new(&emulator.sdk_config().await);
    db.create_table()
        .table_name("t")
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    // The first transaction takes 2 s; the others are sent while it is being written.
    let first = tokio::spawn(
        db.transact_write_items()
            .transact_items(add_one("t", "a"))
            .transact_items(add_one("t", "b"))
            .send(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let second = db
        .transact_write_items()
        .transact_items(add_one("t", "c"))
        .transact_items(add_one("t", "b"))
        .send()
        .await
        .expect_err("b is held by the first transaction");
    let cancelled = second
        .as_service_error()
        .and_then(|e| match e {
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => Some(c),
            _ => None,
        })
        .expect("a cancellation");
    let codes: Vec<_> = cancelled
        .cancellation_reasons()
        .iter()
        .map(|r| r.code().unwrap_or_default().to_string())
        .collect();
    assert_eq!(codes, ["None", "TransactionConflict"]);

    let put = |pk: &str| {
        db.put_item()
            .table_name("t")
            .item("pk", AttributeValue::S(pk.into()))
            .send()
    };
    let refused = put("a")
        .await
        .expect_err("a is held by the first transaction");
    assert!(
        refused
            .as_service_error()
            .is_some_and(|e| e.is_transaction_conflict_exception()),
        "{refused:?}"
    );
    // An item no transaction holds is written as usual; nothing of the cancelled one was.
    put("z").await.unwrap();
    let c = db
        .get_item()
        .table_name("t")
        .key("pk", AttributeValue::S("c".into()))
        .send()
        .await
        .unwrap();
    assert!(
        c.item().is_none(),
        "the cancelled transaction wrote nothing"
    );
    assert!(
        first.await.unwrap().is_ok(),
        "the first transaction is applied"
    );
    // Its answer out, b is free again: the same writer's next transaction does not collide.
    db.transact_write_items()
        .transact_items(add_one("t", "b"))
        .send()
        .await
        .expect("b is free once the first transaction answered");
    assert_eq!(
        emulator.conflicts().unwrap(),
        [
            ("PutItem".to_string(), 1),
            ("TransactWriteItems".to_string(), 1)
        ]
        .into(),
        "the emulator logs each conflict it answered"
    );
}
