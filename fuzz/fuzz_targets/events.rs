//! Provider events: any body on the receipts queue is read into an event, a notice that
//! records nothing, or an error naming why, never a panic. Seeded with the documented SES
//! and SMS events in `events/`.
#![no_main]

use intake::events::{parse, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    match parse(&body) {
        Ok(Parsed::Event(e)) => {
            // What the receipts function keys on is there.
            assert!(!e.message_id.is_empty());
            assert!(e.suppress.iter().all(|s| !s.address.is_empty()));
        }
        Ok(Parsed::Ignored(why)) => assert!(!why.is_empty()),
        Err(why) => assert!(!why.is_empty()),
    }
});
