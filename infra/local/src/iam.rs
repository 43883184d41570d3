//! Which of its grants each function's role used: read from the authorisations the emulator
//! logged (one JSON line per decision, see `moto_atomic.py`) against the roles' policies in
//! the template. A grant nothing used in a run of the suite is a candidate to drop; a denial
//! is a grant missing (or a request that should not be made).

use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One role's grants and what the logged runs did with them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoleUse {
    /// Actions the role's own policies allow.
    pub granted: BTreeSet<String>,
    /// Actions allowed in the logged runs, with how many times.
    pub used: BTreeMap<String, u64>,
    /// Actions denied in the logged runs, with the resource and how many times.
    pub denied: BTreeMap<(String, String), u64>,
}

impl RoleUse {
    /// Granted actions no logged request used.
    pub fn unused(&self) -> Vec<&String> {
        self.granted
            .iter()
            .filter(|a| !self.used.contains_key(*a))
            .collect()
    }
}

/// The roles' grants by the logical id of the function that runs under each.
fn grants(template: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let resources = template["Resources"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for (logical, res) in &resources {
        if res["Type"] != "AWS::Lambda::Function" {
            continue;
        }
        let Some(role) = res["Properties"]["Role"]["Fn::GetAtt"][0].as_str() else {
            continue;
        };
        let mut actions = BTreeSet::new();
        for policy in resources[role]["Properties"]["Policies"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for statement in policy["PolicyDocument"]["Statement"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let listed = &statement["Action"];
                let listed: Vec<&Value> = match listed.as_array() {
                    Some(a) => a.iter().collect(),
                    None => vec![listed],
                };
                actions.extend(
                    listed
                        .into_iter()
                        .filter_map(|a| a.as_str().map(String::from)),
                );
            }
        }
        out.insert(logical.clone(), actions);
    }
    out
}

/// What each function's role did in the logs under `dir`.
pub fn report(template: &Value, dir: &Path) -> Result<BTreeMap<String, RoleUse>> {
    let mut roles: BTreeMap<String, RoleUse> = grants(template)
        .into_iter()
        .map(|(f, granted)| {
            (
                f,
                RoleUse {
                    granted,
                    ..RoleUse::default()
                },
            )
        })
        .collect();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("no logs in {}", dir.display()))?;
    for entry in entries.flatten() {
        for d in decisions(&std::fs::read_to_string(entry.path())?) {
            let Some(role) = roles.get_mut(&d.function) else {
                continue;
            };
            if d.allowed {
                *role.used.entry(d.action).or_default() += 1;
            } else {
                *role.denied.entry((d.action, d.resource)).or_default() += 1;
            }
        }
    }
    Ok(roles)
}

/// One authorisation the emulator decided for a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The function's logical id (`SendFunction`).
    pub function: String,
    pub action: String,
    pub resource: String,
    pub allowed: bool,
}

/// The decisions of a log made for functions; those for other callers (the administrator)
/// are left out.
pub fn decisions(log: &str) -> Vec<Decision> {
    log.lines()
        .filter_map(|line| {
            let d = serde_json::from_str::<Value>(line).ok()?;
            // arn:aws:sts::<account>:assumed-role/<role>/<session>; the local runtime names
            // each session after its function.
            let (_, assumed) = d["caller"].as_str()?.split_once(":assumed-role/")?;
            let text = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            Some(Decision {
                function: assumed.rsplit('/').next()?.to_string(),
                action: text("action"),
                resource: text("resource"),
                allowed: d["allowed"].as_bool() == Some(true),
            })
        })
        .collect()
}

/// The report as printed by `local iam-report`.
pub fn print(roles: &BTreeMap<String, RoleUse>) -> String {
    let mut out =
        String::from("| function | granted action | requests allowed |\n|---|---|---:|\n");
    for (function, role) in roles {
        for action in &role.granted {
            let n = role.used.get(action).copied().unwrap_or(0);
            out.push_str(&format!("| {function} | {action} | {n} |\n"));
        }
        for (action, n) in &role.used {
            if !role.granted.contains(action) {
                out.push_str(&format!(
                    "| {function} | {action} (not in its policy) | {n} |\n"
                ));
            }
        }
    }
    out.push_str("\nDenied:\n");
    let mut any = false;
    for (function, role) in roles {
        for ((action, resource), n) in &role.denied {
            any = true;
            out.push_str(&format!("  {function}: {action} on {resource} ({n}×)\n"));
        }
    }
    if !any {
        out.push_str("  none\n");
    }
    out.push_str("\nGranted, never used:\n");
    let mut any = false;
    for (function, role) in roles {
        for action in role.unused() {
            any = true;
            out.push_str(&format!("  {function}: {action}\n"));
        }
    }
    if !any {
        out.push_str("  none\n");
    }
    out
}
