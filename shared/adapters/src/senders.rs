//! The sender identities of the SES account: which `From` addresses a dispatch may use
//! (seed 002 lets the operator pick the sender), and whether a manifest's sender is one.

use aws_sdk_sesv2::types::IdentityType;
use domain::error::{Error, Result};
use serde::Serialize;

/// A verified identity emails may be sent from: an address, or every address of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sender {
    pub identity: String,
    /// `email_address` or `domain`.
    pub kind: &'static str,
}

/// What the account says of a sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The address, or its domain, is verified for sending.
    Verified,
    /// Neither is an identity that may send; the words say which were looked at.
    Unverified(String),
    /// The account could not be asked (no permission, no answer): the send will tell.
    Unknown(String),
}

#[derive(Clone, Debug)]
pub struct Senders {
    client: aws_sdk_sesv2::Client,
}

/// The address of a `Name <address>` or bare address, in lower case.
pub fn address_of(from: &str) -> String {
    from.rsplit_once('<')
        .map_or(from, |(_, a)| a.trim_end().trim_end_matches('>'))
        .trim()
        .to_lowercase()
}

impl Senders {
    pub fn new(client: aws_sdk_sesv2::Client) -> Senders {
        Senders { client }
    }

    /// Whether emails may be sent from `from`: its address, or else its domain, is an
    /// identity of the account with sending enabled. The account's identities are listed
    /// rather than looked up one by one: an account has few, and a list names no address in
    /// a request path.
    pub async fn check(&self, from: &str) -> Verdict {
        let address = address_of(from);
        let domain = address.rsplit_once('@').map(|(_, d)| d.to_string());
        let senders = match self.list().await {
            Ok(s) => s,
            Err(e) => return Verdict::Unknown(e.to_string()),
        };
        let may = |name: &str| {
            senders
                .iter()
                .any(|s| s.identity.eq_ignore_ascii_case(name))
        };
        if may(&address) || domain.as_deref().is_some_and(may) {
            return Verdict::Verified;
        }
        let mut looked = vec![address.clone()];
        looked.extend(domain);
        Verdict::Unverified(looked.join(" or "))
    }

    /// Every identity of the account that may send, in name order.
    pub async fn list(&self) -> Result<Vec<Sender>> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .client
                .list_email_identities()
                .set_next_token(next)
                .page_size(1000)
                .send()
                .await
                .map_err(Error::aws("ListEmailIdentities"))?;
            for i in page.email_identities() {
                if !i.sending_enabled() {
                    continue;
                }
                let Some(name) = i.identity_name() else {
                    continue;
                };
                out.push(Sender {
                    identity: name.to_string(),
                    kind: match i.identity_type() {
                        Some(IdentityType::Domain) => "domain",
                        _ => "email_address",
                    },
                });
            }
            next = page.next_token().map(str::to_string);
            if next.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(out)
    }
}
