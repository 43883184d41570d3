//! One-click unsubscribe links (RFC 8058): each recipient's link carries the dispatch, the
//! address and an expiry, signed with HMAC-SHA256 under the deployment's key, so that a
//! forged or altered link is refused and changes nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How long a link works after its email was sent.
pub const VALID_FOR_SECS: i64 = 90 * 24 * 3600;
/// The longest token accepted (a dispatch id and an address come to far less).
pub const MAX_TOKEN_CHARS: usize = 1_000;
/// The path of the public endpoint.
pub const PATH: &str = "/unsubscribe";

/// What a link says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    #[serde(rename = "d")]
    pub dispatch_id: String,
    #[serde(rename = "a")]
    pub address: String,
    /// Unix seconds after which the link no longer works.
    #[serde(rename = "e")]
    pub expires: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the link is not one this service made")]
    Forged,
    #[error("the link has expired")]
    Expired,
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
}

/// The signed token of a claim.
pub fn sign(key: &[u8], claim: &Claim) -> String {
    let payload = serde_json::to_vec(claim).unwrap_or_default();
    let mut m = mac(key);
    m.update(&payload);
    let tag = m.finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// The claim of a token signed under `key`, if it is intact and not expired at `now`
/// (Unix seconds).
pub fn verify(key: &[u8], token: &str, now: i64) -> Result<Claim, Refused> {
    if token.len() > MAX_TOKEN_CHARS {
        return Err(Refused::Forged);
    }
    let (payload, tag) = token.split_once('.').ok_or(Refused::Forged)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| Refused::Forged)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| Refused::Forged)?;
    let mut m = mac(key);
    m.update(&payload);
    // Compared in constant time.
    m.verify_slice(&tag).map_err(|_| Refused::Forged)?;
    let claim: Claim = serde_json::from_slice(&payload).map_err(|_| Refused::Forged)?;
    if now > claim.expires {
        return Err(Refused::Expired);
    }
    Ok(claim)
}

/// The link of a claim under the API's public address.
pub fn link(public_api_url: &str, token: &str) -> String {
    format!(
        "{}{PATH}?token={token}",
        public_api_url.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Claim {
        Claim {
            dispatch_id: "bins".into(),
            address: "ann@example.org".into(),
            expires: 2_000,
        }
    }

    #[test]
    fn a_link_made_here_is_read_back_until_it_expires() {
        let t = sign(b"key", &claim());
        assert_eq!(verify(b"key", &t, 1_000), Ok(claim()));
        assert_eq!(verify(b"key", &t, 2_001), Err(Refused::Expired));
    }

    #[test]
    fn an_altered_or_foreign_link_is_refused() {
        let t = sign(b"key", &claim());
        assert_eq!(verify(b"other key", &t, 1_000), Err(Refused::Forged));
        // Another address with the first link's signature.
        let (_, tag) = t.split_once('.').unwrap();
        let other = Claim {
            address: "bo@example.org".into(),
            ..claim()
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        assert_eq!(
            verify(b"key", &format!("{payload}.{tag}"), 1_000),
            Err(Refused::Forged)
        );
        // A later expiry with the first link's signature.
        let later = Claim {
            expires: 9_999_999_999,
            ..claim()
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&later).unwrap());
        assert_eq!(
            verify(b"key", &format!("{payload}.{tag}"), 1_000),
            Err(Refused::Forged)
        );
        for junk in ["", ".", "abc", "a.b.c", &"x".repeat(5_000)] {
            assert_eq!(verify(b"key", junk, 1_000), Err(Refused::Forged), "{junk}");
        }
    }

    #[test]
    fn the_link_is_under_the_public_address() {
        assert_eq!(
            link("https://api.example.org/", "t.s"),
            "https://api.example.org/unsubscribe?token=t.s"
        );
    }
}
