//! Reading `enact.json`: JSON syntax, duplicate keys, then every account on its own (so each
//! bad account is reported at its place) and the rest as a whole, each problem located at
//! file:line:column; then the checks of [`super::check`].

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Account, Settings};
use crate::diagnostic::{Diagnostic, Segment, SourceFile, from_object_located};

impl Settings {
    /// Parses and validates `enact.json` (`source` is its text and the path shown for it).
    ///
    /// # Errors
    /// Every problem of the file, each located: JSON syntax (alone), duplicate keys, bad
    /// accounts, unknown fields and wrong types, then every value the checks of
    /// `check.rs` refuse.
    pub fn parse(source: &SourceFile) -> Result<Settings, Vec<Diagnostic>> {
        let value: Value = serde_json::from_str(&source.text).map_err(|e| vec![source.syntax_error(&e)])?;
        let mut errors: Vec<Diagnostic> = source
            .duplicate_keys()
            .into_iter()
            .map(|(path, location)| {
                let what = match path.as_slice() {
                    [Segment::Key(a), Segment::Key(name)] if a == "accounts" => {
                        format!("duplicate account `{name}`")
                    }
                    [.., Segment::Key(key)] => format!("duplicate field `{key}`"),
                    _ => "duplicate field".to_string(),
                };
                Diagnostic::new(what)
                    .at(Some(location))
                    .hint("JSON keeps only the last of the two; rename or remove one")
            })
            .collect();
        let Value::Object(top) = &value else {
            return Err(vec![
                Diagnostic::new("enact.json must hold a JSON object").at(Some(source.locate(&[], false))),
            ]);
        };
        // Accounts one by one so each bad account is reported, then the rest as a whole.
        let mut accounts = BTreeMap::new();
        if let Some(Value::Object(raw)) = top.get("accounts") {
            for (name, raw_account) in raw {
                let at = [Segment::Key("accounts".into()), Segment::Key(name.clone())];
                match parse_account(raw_account, source, &at) {
                    Ok(account) => {
                        accounts.insert(name.clone(), account);
                    }
                    Err(found) => {
                        for d in found {
                            let hint = match d.hint.as_deref().and_then(|h| h.split_once(" (`")) {
                                // A mistyped value (the type hint of `from_value_located`):
                                // how to write it, then where this provider's fields are listed.
                                Some((write, _)) if write.starts_with("write ") => {
                                    format!("{write}; {}", account_hint(raw_account))
                                }
                                _ => d.hint.clone().unwrap_or_else(|| account_hint(raw_account)),
                            };
                            errors.push(
                                Diagnostic { message: format!("account `{name}`: {}", d.message), ..d }.hint(hint),
                            );
                        }
                    }
                }
            }
        }
        let mut rest = top.clone();
        rest.remove("accounts");
        let mut settings = match from_object_located::<Settings>(&rest, source, &[]) {
            Ok(s) => s,
            Err(found) => {
                errors.extend(found);
                return Err(errors);
            }
        };
        settings.accounts = accounts;
        errors.extend(settings.validate(source));
        if errors.is_empty() { Ok(settings) } else { Err(errors) }
    }
}

/// The help for a problem of an account that has none of its own: what an account of its
/// provider holds, or what every account needs when the provider is missing or unknown.
fn account_hint(raw: &Value) -> String {
    match raw.get("provider").and_then(Value::as_str) {
        Some(provider @ ("local" | "ssh" | "ec2" | "simulated")) => {
            format!("`enact schema enact.json` lists the fields of a `{provider}` account, each with its type")
        }
        _ => "an account needs `provider` (local, ssh, ec2 or simulated) and that provider's fields".to_string(),
    }
}

/// One account: the `provider` tag picks the shape, so errors keep their exact place; every
/// unknown field of the account is reported.
fn parse_account(raw: &Value, source: &SourceFile, at: &[Segment]) -> Result<Account, Vec<Diagnostic>> {
    let Value::Object(raw) = raw else {
        return Err(vec![Diagnostic::new("an account must be a JSON object").at(Some(source.locate(at, false)))]);
    };
    let mut fields = raw.clone();
    let provider = match fields.shift_remove("provider") {
        Some(Value::String(p)) => p,
        Some(_) => {
            let mut here = at.to_vec();
            here.push(Segment::Key("provider".into()));
            return Err(vec![Diagnostic::new("`provider` must be a string").at(Some(source.locate(&here, false)))]);
        }
        None => {
            // A misspelt `provider` is the likely cause: point at it rather than at the account.
            let misspelt = raw.keys().find(|key| crate::suggest::closest(key, ["provider"]).is_some());
            return Err(vec![match misspelt {
                Some(key) => {
                    let mut here = at.to_vec();
                    here.push(Segment::Key(key.clone()));
                    Diagnostic::new(format!(
                        "missing field `provider`; `{}` is no field of an account",
                        key.escape_debug()
                    ))
                    .at(Some(source.locate(&here, true)))
                    .hint("did you mean `provider`? It is one of local, ssh, ec2, simulated")
                }
                None => Diagnostic::new("missing field `provider`").at(Some(source.locate(at, false))),
            }]);
        }
    };
    match provider.as_str() {
        "local" => from_object_located(&fields, source, at).map(Account::Local),
        "ssh" => from_object_located(&fields, source, at).map(Account::Ssh),
        "ec2" => from_object_located(&fields, source, at).map(|a| Account::Ec2(Box::new(a))),
        "simulated" => from_object_located(&fields, source, at).map(Account::Simulated),
        other => {
            let mut here = at.to_vec();
            here.push(Segment::Key("provider".into()));
            let providers = ["local", "ssh", "ec2", "simulated"];
            Err(vec![
                Diagnostic::new(format!("unknown provider `{}`", other.escape_debug()))
                    .at(Some(source.locate(&here, false)))
                    .hint(crate::suggest::hint(other, providers, "`provider` is one of local, ssh, ec2, simulated")),
            ])
        }
    }
}
