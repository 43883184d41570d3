//! Who calls the API, and what they may do.
//!
//! API Gateway's JWT authorizer verifies the caller's token (signature, issuer, audience,
//! expiry) and hands its claims to the API function. The function reads the caller's id and
//! roles from those claims, by names the deployment chooses. A request without verified
//! claims has no caller; plain headers are never read.
//!
//! Two permissions, as in the product guides: one to start and validate dispatches, one to
//! approve and send them. Both may read.

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
    /// The caller the claims name, or `None` when the id claim is missing or empty.
    pub fn from_claims(
        claims: &HashMap<String, String>,
        config: &IdentityConfig,
    ) -> Option<Caller> {
        let id = claims.get(&config.id_claim)?.trim();
        if id.is_empty() {
            return None;
        }
        Some(Caller {
            id: id.to_string(),
            roles: claims
                .get(&config.roles_claim)
                .map(|r| parse_roles(r))
                .unwrap_or_default(),
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

/// Roles from a claim as API Gateway passes it. An array claim arrives flattened as
/// `[a b]`; a JSON array, or names separated by commas or spaces, are read as well.
pub fn parse_roles(value: &str) -> BTreeSet<String> {
    let v = value.trim();
    if let Ok(list) = serde_json::from_str::<Vec<String>>(v) {
        return list
            .into_iter()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
    }
    v.trim_start_matches('[')
        .trim_end_matches(']')
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|r| r.trim_matches('"').trim())
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
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
    fn roles_are_read_in_every_shape_api_gateway_and_issuers_use() {
        let both: BTreeSet<String> = [CREATE_ROLE, SEND_ROLE].map(String::from).into();
        for v in [
            "[MASSDISPATCH MASSDISPATCHSEND]",
            r#"["MASSDISPATCH","MASSDISPATCHSEND"]"#,
            "MASSDISPATCH, MASSDISPATCHSEND",
            " MASSDISPATCHSEND MASSDISPATCH ",
        ] {
            assert_eq!(parse_roles(v), both, "{v}");
        }
        assert!(parse_roles("[]").is_empty());
        assert!(parse_roles("").is_empty());
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
        )
        .unwrap();
        assert_eq!(c.id, "ann@example.org");
        assert!(c.may(Permission::Send));
        assert!(!c.may(Permission::Create));
        assert!(c.may_read());

        let nobody = Caller::from_claims(&claims(&[("sub", "123")]), &config);
        assert_eq!(nobody, None, "no id claim, no caller");
        let c = Caller::from_claims(&claims(&[("email", "bo@example.org")]), &config).unwrap();
        assert!(c.roles.is_empty());
        assert!(!c.may_read());
    }
}
