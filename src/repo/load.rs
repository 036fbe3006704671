//! The effective spec of an environment: `chor.json` with `envs/<env>.json` merged onto it
//! ([`crate::spec::overlay`]), validated against `enact.json` and normalized. Two paths give the
//! same spec: a fast one (typed parsing, the overlay's services merged one by one) taken when
//! nothing is wrong, and a located one that finds and places every problem at
//! file:line:column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{ConfigRepo, ENVS_DIR, SPEC_FILE, deployable, read_optional, read_text};
use crate::diagnostic::{Diagnostic, Location, Segment, SourceFile, without_bom};
use crate::error::Result;
use crate::spec::Choreography;
use crate::spec::overlay;
use crate::spec::parse::{FileKind, LISTS, parse_spec_file, read_base_fast};
use crate::spec::validate::validate;

/// The spec of one environment: base and overlay merged, validated and normalized.
#[derive(Debug, Clone)]
pub struct EffectiveSpec {
    /// The environment's name.
    pub env: String,
    /// The merged spec, valid and normalized (the canonical form).
    pub choreography: Choreography,
    base: (SourceFile, Value),
    overlay: Option<(SourceFile, Value)>,
}

impl ConfigRepo {
    /// Loads, merges and validates the effective spec of `env`: `chor.json` with
    /// `envs/<env>.json` merged onto it ([`crate::spec::overlay`]), fast when nothing is wrong.
    ///
    /// # Errors
    /// A file that cannot be read; every problem of the two files and of their merge, located.
    pub fn load(&self, env: &str) -> Result<EffectiveSpec> {
        let overlay = read_optional(&self.overlay_path(env))?;
        self.load_with_overlay(env, overlay)
    }

    /// [`Self::load`], then the checks of what enact.json decides about running the spec
    /// ([`deployable::check`]: accounts that can make nodes, package types the provider runs,
    /// package files that exist): what `validate`, `plan` and `apply` need.
    ///
    /// # Errors
    /// Every problem of the spec, or else every one of these checks, located at file:line:column.
    pub fn load_deployable(&self, env: &str) -> Result<EffectiveSpec> {
        let effective = self.load(env)?;
        let no_place = |_: &str, _: usize, _: &[Segment]| None;
        if deployable::check(&effective.choreography, &self.settings, env, &self.root, &no_place).is_empty() {
            return Ok(effective);
        }
        // The fast path keeps no positions: load again where every field can be found.
        let base_text = read_text(&self.root.join(SPEC_FILE))?;
        let overlay_text = read_optional(&self.overlay_path(env))?;
        let located = self.load_texts_located(env, &base_text, overlay_text.as_deref())?;
        let errors = deployable::check(&located.choreography, &self.settings, env, &self.root, &|s, o, p| {
            located.locate_occurrence(s, o, p)
        });
        Err(errors.into_iter().map(|d| d.env(env)).collect::<Vec<_>>().into())
    }

    /// Loads `env` as if its overlay held `overlay_text` (to check an edit before writing it).
    ///
    /// # Errors
    /// `chor.json` cannot be read; every problem of the spec with that overlay, located.
    pub fn load_with_overlay(&self, env: &str, overlay_text: Option<String>) -> Result<EffectiveSpec> {
        // A large spec is mapped, not read: the fast path needs no copy of its text.
        let path = self.root.join(SPEC_FILE);
        crate::mapped::with_text(&path, |base_text| self.load_texts(env, base_text, overlay_text.as_deref()))
            .map_err(crate::error::Error::io("read", &path))?
    }

    /// What [`Self::load`] does, on texts rather than files: `base_text` as `chor.json` and
    /// `overlay_text` as `envs/<env>.json` (`None`: no overlay), each with or without a leading
    /// byte order mark. Problems are located in those two files, as `load` locates them.
    ///
    /// # Errors
    /// An invalid environment name, or every problem of the two texts and of their merge
    /// (syntax, shape, validation), located at file:line:column.
    pub fn load_texts(&self, env: &str, base_text: &str, overlay_text: Option<&str>) -> Result<EffectiveSpec> {
        Self::check_env_name(env)?;
        if let Some(effective) = self.load_texts_fast(env, base_text, overlay_text)? {
            return Ok(effective);
        }
        self.load_texts_located(env, base_text, overlay_text)
    }

    /// The path of [`Self::load_texts`] that locates every problem at file:line:column: both
    /// texts parsed with their shapes checked, merged as JSON, then deserialized and validated.
    /// It gives the same spec as the fast path wherever that one succeeds.
    ///
    /// # Errors
    /// Every problem of the two texts and of their merge, located.
    pub fn load_texts_located(&self, env: &str, base_text: &str, overlay_text: Option<&str>) -> Result<EffectiveSpec> {
        self.load_texts_located_in(env, base_text, overlay_text, &self.settings)
    }

    /// [`Self::load_texts_located`], with the accounts and package types of `catalog` rather
    /// than of `enact.json`.
    fn load_texts_located_in(
        &self,
        env: &str,
        base_text: &str,
        overlay_text: Option<&str>,
        catalog: &dyn crate::spec::validate::Catalog,
    ) -> Result<EffectiveSpec> {
        let base_source = SourceFile::new(SPEC_FILE, without_bom(base_text).to_string());
        let mut errors = Vec::new();
        let base_value = parse_spec_file(&base_source, FileKind::Base).unwrap_or_else(|e| {
            errors.extend(e);
            Value::Null
        });
        let overlay_display = PathBuf::from(ENVS_DIR).join(format!("{env}.json"));
        let overlay = match overlay_text {
            Some(text) => {
                let source = SourceFile::new(&overlay_display, without_bom(text).to_string());
                match parse_spec_file(&source, FileKind::Overlay) {
                    Ok(value) => Some((source, value)),
                    Err(e) => {
                        errors.extend(e);
                        None
                    }
                }
            }
            None => None,
        };
        if !errors.is_empty() {
            return Err(errors.into());
        }
        let mut merged = base_value.clone();
        if let Some((source, value)) = &overlay {
            overlay::merge(&mut merged, value, source)?;
        }
        let choreography: Choreography = serde_json::from_value(merged).map_err(|e| {
            Diagnostic::new(format!("the merged spec of env `{env}` is not valid: {e}")).in_file(&overlay_display)
        })?;
        let mut effective =
            EffectiveSpec { env: env.to_string(), choreography, base: (base_source, base_value), overlay };
        let errors = validate(&effective.choreography, catalog, &|service, occurrence, path| {
            effective.locate_occurrence(service, occurrence, path)
        });
        if !errors.is_empty() {
            // With an overlay in play the same base line can be fine in one env and not another.
            let errors: Vec<Diagnostic> = match &effective.overlay {
                Some((_, overlay)) => {
                    let misnamed = misnamed_services(&effective.base.1, overlay);
                    // A misspelt service's problems (no `port`, no `packageUri`, …) have one
                    // cause: they are one problem, at its first place, with the likely fix.
                    let mut out: Vec<Diagnostic> = Vec::with_capacity(errors.len());
                    let mut merged_into: BTreeMap<String, usize> = BTreeMap::new();
                    for d in errors {
                        let meant = d.service.as_deref().and_then(|s| misnamed.get(s));
                        let Some((typed, meant)) = meant else {
                            out.push(d.env(env));
                            continue;
                        };
                        if let Some(&first) = merged_into.get(typed.as_str()) {
                            out[first].message = format!("{}; {}", out[first].message, d.message);
                            continue;
                        }
                        merged_into.insert(typed.clone(), out.len());
                        out.push(
                            d.hint(format!(
                                "chor.json has no service `{typed}`, so the overlay adds it as a new one; did you mean `{meant}`?"
                            ))
                            .env(env),
                        );
                    }
                    out
                }
                None => errors,
            };
            return Err(errors.into());
        }
        effective.choreography.normalize();
        Ok(effective)
    }
}

impl ConfigRepo {
    /// What can be checked of the spec files of the repository at `root` without its settings:
    /// `chor.json` and every overlay `envs/<env>.json` (in name order), each parsed and its
    /// shape checked (syntax, unknown or mistyped fields, duplicate keys), located at
    /// file:line:column; when every file has its shape, what the spec says that holds whatever
    /// the settings are (a dependency on no service, a name twice, an overlay's misspelt
    /// service), for `chor.json` alone and with each overlay. `validate` reports these beside
    /// the problems of an `enact.json` that does not load, so one run shows the problems of
    /// every file. A file that cannot be read is left out: loading the repository reports it.
    pub fn spec_file_errors(root: &Path) -> Vec<Diagnostic> {
        let mut files = vec![(PathBuf::from(SPEC_FILE), FileKind::Base)];
        let mut overlays: Vec<PathBuf> = std::fs::read_dir(root.join(ENVS_DIR))
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| PathBuf::from(ENVS_DIR).join(entry.file_name()))
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        overlays.sort();
        files.extend(overlays.into_iter().map(|path| (path, FileKind::Overlay)));
        let mut errors = Vec::new();
        let mut texts = Vec::new();
        for (path, kind) in files {
            let Ok(text) = std::fs::read_to_string(root.join(&path)) else { continue };
            let source = SourceFile::new(&path, without_bom(&text).to_string());
            match parse_spec_file(&source, kind) {
                Ok(_) => texts.push((path, text)),
                Err(e) => errors.extend(e),
            }
        }
        if !errors.is_empty() {
            return errors;
        }
        // Every file has its shape: what the spec says holds whatever the settings are (a
        // dependency on no service, a name twice, an overlay's misspelt service), checked for
        // chor.json alone and with each overlay, as if every account and package type existed.
        let Some(base) = texts.iter().position(|(path, _)| path == Path::new(SPEC_FILE)).map(|i| texts.remove(i).1)
        else {
            return errors;
        };
        let repo = ConfigRepo { root: root.to_path_buf(), settings: crate::repo::settings::Settings::default() };
        let overlays = texts.iter().map(|(path, text)| {
            let env = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            (env, Some(text.as_str()))
        });
        let any = crate::spec::validate::AnyCatalog;
        for (env, overlay) in std::iter::once((String::new(), None)).chain(overlays) {
            let env = if env.is_empty() { "default".to_string() } else { env };
            if let Err(crate::error::Error::Invalid(found)) = repo.load_texts_located_in(&env, &base, overlay, &any) {
                // A problem of chor.json shows in every environment: once, as chor.json alone has it.
                let bare = |d: &Diagnostic| Diagnostic { env: None, ..d.clone() };
                for d in found.0 {
                    if !errors.iter().any(|known| bare(known) == bare(&d)) {
                        errors.push(d);
                    }
                }
            }
        }
        errors
    }

    /// The common case of [`Self::load_texts`], fast: a base spec that parses straight into the
    /// model, an overlay merged service by service into it, and the result valid. Only the
    /// services the overlay names go through JSON values. `None` sends the caller down the path
    /// that locates every problem ([`Self::load_texts_located`]), which gives the same spec when
    /// there is none.
    ///
    /// # Errors
    /// None today: every problem is left to the located path (`Ok(None)`).
    pub fn load_texts_fast(
        &self,
        env: &str,
        base_text: &str,
        overlay_text: Option<&str>,
    ) -> Result<Option<EffectiveSpec>> {
        let overlay_display = PathBuf::from(ENVS_DIR).join(format!("{env}.json"));
        let overlay = match overlay_text {
            Some(text) => {
                let source = SourceFile::new(&overlay_display, without_bom(text).to_string());
                match parse_spec_file(&source, FileKind::Overlay) {
                    Ok(value) => Some(value),
                    Err(_) => return Ok(None),
                }
            }
            None => None,
        };
        let Some(mut choreography) = read_base_fast(without_bom(base_text)) else {
            return Ok(None);
        };
        if let Some(overlay) = &overlay
            && overlay::merge_typed(&mut choreography, overlay).is_err()
        {
            return Ok(None);
        }
        if !validate(&choreography, &self.settings, &|_, _, _| None).is_empty() {
            return Ok(None);
        }
        let mut effective = EffectiveSpec {
            env: env.to_string(),
            choreography,
            base: (SourceFile::new(SPEC_FILE, String::new()), Value::Null),
            overlay: None,
        };
        effective.choreography.normalize();
        Ok(Some(effective))
    }
}

impl EffectiveSpec {
    /// Where a field of a service was written: the overlay when it sets that field, else the base.
    pub fn locate(&self, service: &str, path: &[Segment]) -> Option<Location> {
        self.locate_occurrence(service, 0, path)
    }

    /// As [`Self::locate`], for the `occurrence`th service of that name (0 is the first).
    pub fn locate_occurrence(&self, service: &str, occurrence: usize, path: &[Segment]) -> Option<Location> {
        let layers = self.overlay.iter().chain(std::iter::once(&self.base));
        for (source, value) in layers {
            let mut skip = occurrence;
            for list in LISTS {
                let Some(Value::Array(items)) = value.get(list) else {
                    continue;
                };
                let matches: Vec<usize> = items
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.get("name").and_then(Value::as_str) == Some(service))
                    .map(|(i, _)| i)
                    .collect();
                if matches.len() <= skip {
                    skip -= matches.len();
                    continue;
                }
                let index = matches[skip];
                let sets_field = match path.first() {
                    Some(Segment::Key(k)) => items[index].get(k).is_some(),
                    _ => true,
                };
                if sets_field {
                    let mut at = vec![Segment::Key(list.to_string()), Segment::Index(index)];
                    at.extend_from_slice(path);
                    return Some(source.locate(&at, false));
                }
            }
        }
        None
    }

    /// The files this spec was made of, for messages.
    pub fn files(&self) -> Vec<&Path> {
        let mut files = vec![self.base.0.display.as_path()];
        if let Some((source, _)) = &self.overlay {
            files.push(source.display.as_path());
        }
        files
    }
}

/// The services an overlay adds (no service of its list in the base has the name) whose name is
/// close to one the base has: name → (name, the base's name). A misspelt name in an overlay
/// makes a new service, which then lacks every field the overlay does not set.
fn misnamed_services(base: &Value, overlay: &Value) -> std::collections::HashMap<String, (String, String)> {
    let names = |value: &Value, list: &str| -> Vec<String> {
        value
            .get(list)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(|s| s.get("name")?.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let mut misnamed = std::collections::HashMap::new();
    for list in LISTS {
        let in_base = names(base, list);
        for name in names(overlay, list) {
            if in_base.contains(&name) {
                continue;
            }
            if let Some(meant) = crate::suggest::closest(&name, in_base.iter().map(String::as_str)) {
                misnamed.insert(name.clone(), (name, meant.to_string()));
            }
        }
    }
    misnamed
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{
  "deployableServiceSpecs": [
    {"name": "airline", "roles": ["airline"], "packageUri": "a.py", "port": 8001,
     "resourceImpact": {"memory": "SMALL", "cpu": "1"}, "version": "1.0"},
    {"name": "travel", "roles": ["travel"], "packageUri": "t.py", "port": 8002, "numberOfInstances": 2,
     "dependencies": [{"serviceSpecName": "airline", "serviceSpecRole": "airline"}]},
    {"name": "hotel", "roles": ["hotel"], "packageUri": "h.py", "port": 8003}
  ],
  "legacyServiceSpecs": [{"name": "weather", "roles": ["weather"], "nativeURIs": ["http://10.0.0.5:80/w"]}]
}"#;

    fn repo() -> (tempfile::TempDir, ConfigRepo) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SPEC_FILE), BASE).unwrap();
        let repo = ConfigRepo::open(dir.path()).unwrap();
        (dir, repo)
    }

    /// A spec of a mebibyte or more is mapped rather than read: it loads as the same spec, and a
    /// fault in it is still located at its line and column.
    #[test]
    fn a_large_spec_loads_as_read_and_its_faults_are_located() {
        let services: Vec<String> = (0..13_000)
            .map(|i| {
                format!(r#"    {{"name": "svc-{i:05}", "roles": ["svc-{i:05}"], "packageUri": "s.py", "port": 9000}}"#)
            })
            .collect();
        let text = format!("{{\n  \"deployableServiceSpecs\": [\n{}\n  ]\n}}\n", services.join(",\n"));
        assert!(text.len() as u64 >= crate::mapped::MAP_FROM_BYTES, "{} bytes", text.len());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SPEC_FILE), &text).unwrap();
        let repo = ConfigRepo::open(dir.path()).unwrap();
        let loaded = repo.load("dev").unwrap();
        assert_eq!(loaded.choreography.deployable_service_specs.len(), 13_000);
        assert_eq!(loaded.choreography, repo.load_texts_located("dev", &text, None).unwrap().choreography);

        // The last service's port, out of range: found, and placed on its line.
        let broken = text.replacen(
            r#""svc-12999"], "packageUri": "s.py", "port": 9000"#,
            r#""svc-12999"], "packageUri": "s.py", "port": 0"#,
            1,
        );
        std::fs::write(dir.path().join(SPEC_FILE), &broken).unwrap();
        let error = repo.load("dev").unwrap_err().to_string();
        assert!(error.contains(&format!("chor.json:{}:", 13_000 + 2)), "{error}");
        assert!(error.contains("svc-12999"), "{error}");
    }

    /// The fast path and the located path give the same spec for every overlay the fast path
    /// takes, and the fast path leaves every faulty overlay to the located one.
    #[test]
    fn the_fast_path_merges_overlays_as_the_located_path_does() {
        let (_dir, repo) = repo();
        let overlays = [
            r#"{}"#,
            r#"{"deployableServiceSpecs": []}"#,
            r#"{"deployableServiceSpecs": [{"name": "travel", "numberOfInstances": 5}]}"#,
            r#"{"deployableServiceSpecs": [{"name": "airline", "resourceImpact": {"memory": "LARGE", "cpu": null}, "version": null}]}"#,
            r#"{"deployableServiceSpecs": [{"name": "hotel", "$delete": true},
                {"name": "cars", "roles": ["cars"], "packageUri": "c.py", "port": 8004}]}"#,
            r#"{"deployableServiceSpecs": [{"name": "travel", "dependencies": []}],
                "legacyServiceSpecs": [{"name": "weather", "nativeURIs": ["http://10.0.0.6:80/w"]}]}"#,
            r#"{"legacyServiceSpecs": [{"name": "weather", "$delete": true}], "deployableServiceSpecs": null}"#,
        ];
        for overlay in overlays {
            let fast = repo
                .load_texts_fast("prod", BASE, Some(overlay))
                .unwrap()
                .unwrap_or_else(|| panic!("not fast: {overlay}"));
            let located = repo.load_texts_located("prod", BASE, Some(overlay)).unwrap();
            assert_eq!(fast.choreography, located.choreography, "{overlay}");
        }
        let faulty = [
            r#"{"deployableServiceSpecs": [{"name": "travel"}, {"name": "travel"}]}"#,
            r#"{"deployableServiceSpecs": [{"name": "ghost", "$delete": true}]}"#,
            r#"{"deployableServiceSpecs": [{"name": "travel", "numberOfInstances": "many"}]}"#,
            r#"{"deployableServiceSpecs": [{"name": "travel", "dependencies": [{"serviceSpecName": "ghost", "serviceSpecRole": "x"}]}]}"#,
            r#"{"deployableServiceSpecs": [{"name": "weather", "packageUri": "w.py", "port": 1}]}"#,
        ];
        for overlay in faulty {
            assert!(repo.load_texts_fast("prod", BASE, Some(overlay)).unwrap().is_none(), "{overlay}");
            assert!(repo.load_texts_located("prod", BASE, Some(overlay)).is_err(), "{overlay}");
        }
    }

    /// The word `null` inside a string of the base spec keeps the fast path; a JSON `null`
    /// leaves it to the located path, which refuses it.
    #[test]
    fn only_a_json_null_sends_the_base_spec_down_the_located_path() {
        let (_dir, repo) = repo();
        let words = BASE.replace("\"version\": \"1.0\"", "\"version\": \"null\", \"cloudAccount\": \"local\"");
        let overlay = r#"{"deployableServiceSpecs": [{"name": "travel", "numberOfInstances": 5, "version": null}]}"#;
        let fast = repo.load_texts_fast("prod", &words, Some(overlay)).unwrap().expect("a string `null` is fast");
        let located = repo.load_texts_located("prod", &words, Some(overlay)).unwrap();
        assert_eq!(fast.choreography, located.choreography);
        let json_null = BASE.replace("\"version\": \"1.0\"", "\"version\": null");
        assert!(repo.load_texts_fast("prod", &json_null, None).unwrap().is_none());
        let e = repo.load_texts_located("prod", &json_null, None).unwrap_err();
        assert!(e.to_string().contains("`version` is null"), "{e}");
    }
}
