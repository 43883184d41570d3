//! Who calls the API, and what they may do.
//!
//! API Gateway's JWT authorizer verifies the caller's token (signature, issuer, audience,
//! expiry) and hands its claims to the API function. The function reads the caller's id and
//! roles from those claims, by names the deployment chooses. A request without verified
//! claims has no caller; plain headers are never read.
//!
//! Two permissions, as in the product guides: one to start and validate dispatches, one to
//! approve and send them. Both may read.
//!
//! A role is granted only by a whole entry of the roles claim, compared exactly: a claim that
//! is one text is one role (`Not MASSDISPATCHSEND` is not `MASSDISPATCHSEND`); a JSON array is
//! its entries. API Gateway's HTTP API passes an array claim flattened to `[a b]`, which cannot
//! tell the entry `a b` from the entries `a` and `b`; for that form the array is read from the
//! caller's token itself, and only when it flattens to exactly what API Gateway verified.

use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// Role names of the two permissions.
pub const CREATE_ROLE: &str = "MASSDISPATCH";
pub const SEND_ROLE: &str = "MASSDISPATCHSEND";

/// How callers are read from the claims, and whether four eyes apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// The claim holding the caller's id (`sub` by default).
    pub id_claim: String,
    /// The claim holding the caller's roles (`roles` by default; `cognito:groups` for
    /// Cognito groups).
    pub roles_claim: String,
    /// The person who started a dispatch may not approve it.
    pub four_eyes: bool,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            id_claim: "sub".into(),
            roles_claim: "roles".into(),
            four_eyes: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Start a dispatch, validate it again, cancel it before approval.
    Create,
    /// Approve, reject, pause, resume, resend, close, archive.
    Send,
}

impl Permission {
    pub fn role(self) -> &'static str {
        match self {
            Permission::Create => CREATE_ROLE,
            Permission::Send => SEND_ROLE,
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.role())
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub id: String,
    pub roles: BTreeSet<String>,
}

impl Caller {
    /// The caller the claims name, or `None` when the id claim is missing or empty. `token`
    /// is the payload of the caller's token, when the request carries it, for array claims
    /// that API Gateway flattened.
    pub fn from_claims(
        claims: &HashMap<String, String>,
        config: &IdentityConfig,
        token: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Option<Caller> {
        let id = claims.get(&config.id_claim)?.trim();
        if id.is_empty() {
            return None;
        }
        // The token is only read for a caller it names: its id claim must be the verified one.
        let token = token.filter(|t| {
            t.get(&config.id_claim).and_then(serde_json::Value::as_str)
                == Some(claims[&config.id_claim].as_str())
        });
        let roles = match claims.get(&config.roles_claim) {
            Some(r) => match token {
                Some(t) => match t.get(&config.roles_claim) {
                    Some(from_token) => parse_roles(r, Some(from_token)),
                    None => BTreeSet::new(),
                },
                None => parse_roles(r, None),
            },
            None => BTreeSet::new(),
        };
        Some(Caller {
            id: id.to_string(),
            roles,
        })
    }

    pub fn may(&self, permission: Permission) -> bool {
        self.roles.contains(permission.role())
    }

    /// Either permission lets a caller read dispatches.
    pub fn may_read(&self) -> bool {
        self.may(Permission::Create) || self.may(Permission::Send)
    }
}

/// Roles from a claim as API Gateway passes it, each a whole entry, compared exactly (no
/// trimming):
///
/// - with the claim from the caller's token (`from_token`), by its type there: an array's
///   entries when it flattens (`[a b]`) to exactly the verified text, a text when it equals
///   the verified text; anything else, none;
/// - without it: a JSON array text's entries, else the one role the text names; API
///   Gateway's flattened array (`[a b]`) cannot tell entries apart and grants none.
pub fn parse_roles(value: &str, from_token: Option<&serde_json::Value>) -> BTreeSet<String> {
    use serde_json::Value;
    let whole = |entries: Vec<String>| -> BTreeSet<String> {
        entries.into_iter().filter(|r| !r.is_empty()).collect()
    };
    match from_token {
        Some(Value::Array(items)) => {
            let entries: Vec<String> = items
                .iter()
                .map(|e| match e {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            if format!("[{}]", entries.join(" ")) == value {
                whole(entries)
            } else {
                BTreeSet::new()
            }
        }
        Some(Value::String(s)) if s == value => whole(vec![s.clone()]),
        Some(_) => BTreeSet::new(),
        None => {
            if let Ok(list) = serde_json::from_str::<Vec<String>>(value) {
                whole(list)
            } else if value.starts_with('[') && value.ends_with(']') {
                BTreeSet::new()
            } else {
                whole(vec![value.to_string()])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn roles_are_whole_entries_of_the_claim_in_each_form_it_comes_in() {
        let both: BTreeSet<String> = [CREATE_ROLE, SEND_ROLE].map(String::from).into();
        let token = serde_json::json!(["MASSDISPATCH", "MASSDISPATCHSEND"]);
        assert_eq!(
            parse_roles("[MASSDISPATCH MASSDISPATCHSEND]", Some(&token)),
            both
        );
        assert_eq!(
            parse_roles(r#"["MASSDISPATCH","MASSDISPATCHSEND"]"#, None),
            both
        );
        assert_eq!(
            parse_roles("MASSDISPATCHSEND", None),
            [SEND_ROLE.to_string()].into()
        );
        let text = serde_json::json!("MASSDISPATCHSEND");
        assert_eq!(
            parse_roles("MASSDISPATCHSEND", Some(&text)),
            [SEND_ROLE.to_string()].into()
        );
        assert!(parse_roles("[]", Some(&serde_json::json!([]))).is_empty());
        assert!(parse_roles("", None).is_empty());
    }

    #[test]
    fn no_text_near_a_role_grants_it() {
        let grants_send = |claim: &str, token: Option<serde_json::Value>| {
            parse_roles(claim, token.as_ref()).contains(SEND_ROLE)
        };
        assert!(!grants_send("Not MASSDISPATCHSEND", None));
        assert!(!grants_send("xMASSDISPATCHSEND", None));
        assert!(!grants_send("MASSDISPATCHSENDx", None));
        assert!(!grants_send("MASSDISPATCH, MASSDISPATCHSEND", None));
        assert!(!grants_send(r#"["Not MASSDISPATCHSEND"]"#, None));
        // API Gateway flattens ["Not MASSDISPATCHSEND"] to the text of two entries; the token
        // tells them apart.
        let one = serde_json::json!(["Not MASSDISPATCHSEND"]);
        assert!(!grants_send("[Not MASSDISPATCHSEND]", Some(one.clone())));
        assert_eq!(
            parse_roles("[Not MASSDISPATCHSEND]", Some(&one)),
            ["Not MASSDISPATCHSEND".to_string()].into()
        );
        // Without the token, or with a token whose array is not the one verified, none.
        assert!(!grants_send("[Not MASSDISPATCHSEND]", None));
        let other = serde_json::json!(["MASSDISPATCHSEND"]);
        assert!(!grants_send("[Not MASSDISPATCHSEND]", Some(other)));
        assert!(grants_send("MASSDISPATCHSEND", None));
        // Exactly: no trimming, and a quoted group name is that name, quotes and all.
        assert!(!grants_send(" MASSDISPATCHSEND", None));
        assert!(!grants_send("MASSDISPATCHSEND\u{3000}", None));
        let quoted = serde_json::json!(["\"MASSDISPATCHSEND\""]);
        assert!(!grants_send(r#"["MASSDISPATCHSEND"]"#, Some(quoted)));
        // A token whose claim is a text other than the verified one grants nothing.
        let other_text = serde_json::json!("MASSDISPATCHSEND");
        assert!(!grants_send("Not MASSDISPATCHSEND", Some(other_text)));
    }

    #[test]
    fn the_caller_comes_from_the_configured_claims() {
        let config = IdentityConfig {
            id_claim: "email".into(),
            roles_claim: "cognito:groups".into(),
            four_eyes: true,
        };
        let c = Caller::from_claims(
            &claims(&[
                ("sub", "123"),
                ("email", "ann@example.org"),
                ("cognito:groups", "[MASSDISPATCHSEND]"),
            ]),
            &config,
            Some(
                &serde_json::json!({"email": "ann@example.org", "cognito:groups": ["MASSDISPATCHSEND"]})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .unwrap();
        assert_eq!(c.id, "ann@example.org");
        assert!(c.may(Permission::Send));
        assert!(!c.may(Permission::Create));
        assert!(c.may_read());

        let nobody = Caller::from_claims(&claims(&[("sub", "123")]), &config, None);
        assert_eq!(nobody, None, "no id claim, no caller");
        let c =
            Caller::from_claims(&claims(&[("email", "bo@example.org")]), &config, None).unwrap();
        assert!(c.roles.is_empty());
        assert!(!c.may_read());
    }

    #[test]
    fn a_token_for_another_caller_is_not_read() {
        let config = IdentityConfig::default();
        let verified = claims(&[("sub", "ann"), ("roles", "[MASSDISPATCHSEND]")]);
        let token = |sub: &str| {
            serde_json::json!({"sub": sub, "roles": ["MASSDISPATCHSEND"]})
                .as_object()
                .unwrap()
                .clone()
        };
        let ann = Caller::from_claims(&verified, &config, Some(&token("ann"))).unwrap();
        assert!(ann.may(Permission::Send));
        let not_hers = Caller::from_claims(&verified, &config, Some(&token("bo"))).unwrap();
        assert!(not_hers.roles.is_empty());
        let none = Caller::from_claims(&verified, &config, None).unwrap();
        assert!(
            none.roles.is_empty(),
            "a flattened array without the token grants nothing"
        );
    }
}
