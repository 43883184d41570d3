//! The rules for one value: email addresses, phone numbers, consent, and the fingerprints
//! that find duplicates in constant memory per row.

use super::*;

pub(super) fn fingerprint(text: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(text.as_bytes())
}

/// The fingerprint of a channel's address, without regard to case.
/// The fingerprint of `channel:address` in lower case. A short ASCII address (nearly all of
/// them) is lowered on the stack; both ways give the same fingerprint.
pub(super) fn address_fingerprint(channel: Channel, address: &str) -> u128 {
    let tag = channel.as_str().as_bytes();
    let n = tag.len() + 1 + address.len();
    let mut buf = [0u8; 160];
    if address.is_ascii() && n <= buf.len() {
        buf[..tag.len()].copy_from_slice(tag);
        buf[tag.len()] = b':';
        buf[tag.len() + 1..n].copy_from_slice(address.as_bytes());
        buf[..n].make_ascii_lowercase();
        xxhash_rust::xxh3::xxh3_128(&buf[..n])
    } else {
        fingerprint(&format!("{channel}:{}", address.to_lowercase()))
    }
}

/// A set of fingerprints. They are hashes already, so the set uses their low bits as they
/// are instead of hashing them again.
pub(super) type Fingerprints = HashSet<u128, std::hash::BuildHasherDefault<LowBits>>;

#[derive(Default)]
pub(super) struct LowBits(u64);

impl std::hash::Hasher for LowBits {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed; other input is folded in all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// What a consent cell says: `Some(true)` yes, `Some(false)` no (an empty cell is no),
/// `None` neither.
pub fn consent(raw: &str) -> Option<bool> {
    match raw.trim().to_lowercase().as_str() {
        "yes" | "y" | "true" | "1" | "ja" | "j" | "x" => Some(true),
        "no" | "n" | "false" | "0" | "nej" | "" => Some(false),
        _ => None,
    }
}

/// A usable email address, trimmed, with the domain in lower case.
pub fn check_email(raw: &str) -> Result<String, (&'static str, String)> {
    if raw.is_empty() {
        return Err((codes::MISSING_ADDRESS, "the email address is empty".into()));
    }
    let parsed = email_address::EmailAddress::from_str(raw).map_err(|e| {
        (
            codes::INVALID_EMAIL,
            format!("'{raw}' is not a usable email address: {e}"),
        )
    })?;
    if raw.contains('<') || !parsed.domain().contains('.') {
        return Err((
            codes::INVALID_EMAIL,
            format!("'{raw}' is not a usable email address: the domain has no dot"),
        ));
    }
    Ok(format!(
        "{}@{}",
        parsed.local_part(),
        parsed.domain().to_ascii_lowercase()
    ))
}

/// Loads the phone number metadata (every country's number patterns, about 0.1 s) now rather
/// than at a list's first phone number. The validate function calls it at init, once per
/// process.
pub fn warm_up() {
    let _ = check_phone("+4520000000", phonenumber::country::Id::DK);
}

/// A phone number in E.164, read with a default region for national numbers.
pub fn check_phone(
    raw: &str,
    region: phonenumber::country::Id,
) -> Result<String, (&'static str, String)> {
    if raw.is_empty() {
        return Err((codes::MISSING_ADDRESS, "the phone number is empty".into()));
    }
    let parsed = phonenumber::parse(Some(region), raw).map_err(|e| {
        (
            codes::INVALID_PHONE,
            format!("'{raw}' is not a phone number: {e}"),
        )
    })?;
    if !phonenumber::is_valid(&parsed) {
        return Err((
            codes::INVALID_PHONE,
            format!("'{raw}' is not a valid phone number for its country"),
        ));
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string())
}
