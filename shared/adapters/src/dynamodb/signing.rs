//! The deployment's signing key for unsubscribe links, kept in the table: made once, by
//! whichever function needs it first (a conditional put, so two first users agree on one).
//!
//! | item | pk | sk |
//! |------|----|----|
//! | key  | `KEY#UNSUBSCRIBE` | `KEY` |

use super::{get_s, s, Item, Store};
use base64::Engine as _;
use domain::error::{Error, Result};
use std::collections::HashMap;

const PK: &str = "KEY#UNSUBSCRIBE";
const SK: &str = "KEY";

impl Store {
    async fn read_signing_key(&self) -> Result<Option<Vec<u8>>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(PK))
            .key("sk", s(SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(Error::aws("GetItem signing key"))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let key = get_s(&item, "key")
            .ok_or_else(|| Error::Malformed("the signing key item has no key".into()))?;
        base64::engine::general_purpose::STANDARD
            .decode(key)
            .map(Some)
            .map_err(|e| Error::Malformed(format!("the signing key: {e}")))
    }

    /// The key unsubscribe links are signed with: 256 random bits, made on first use.
    pub async fn signing_key(&self) -> Result<Vec<u8>> {
        if let Some(k) = self.read_signing_key().await? {
            return Ok(k);
        }
        let mut key = Vec::with_capacity(32);
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        let item: Item = HashMap::from([
            ("pk".to_string(), s(PK)),
            ("sk".to_string(), s(SK)),
            (
                "key".to_string(),
                s(base64::engine::general_purpose::STANDARD.encode(&key)),
            ),
        ]);
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
        {
            Ok(_) => Ok(key),
            // Another function made it first: that one is the key.
            Err(e) if super::is_conditional_failure(&e) => self
                .read_signing_key()
                .await?
                .ok_or_else(|| Error::Malformed("the signing key vanished".into())),
            Err(e) => Err(Error::aws("PutItem signing key")(e)),
        }
    }
}

#[async_trait::async_trait]
impl engine::ports::SigningKeys for Store {
    async fn unsubscribe_key(&self) -> Result<Vec<u8>> {
        self.signing_key().await
    }
}
