use super::*;

#[test]
fn notification_keys_are_decoded() {
    assert_eq!(
        decode_key("incoming%2Fwinter%2Fmanifest.json"),
        "incoming/winter/manifest.json"
    );
    assert_eq!(
        decode_key("incoming/a+b/manifest.json"),
        "incoming/a b/manifest.json"
    );
    assert_eq!(decode_key("incoming/%C3%A6/x"), "incoming/æ/x");
}
