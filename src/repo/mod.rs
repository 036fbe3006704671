//! The config repository: found like cargo finds Cargo.toml (walk up to `chor.json`), holding
//! `enact.json`, the base spec, one overlay per environment and the recorded state
//! (`docs/formats.md` §1).
//!
//! This file finds and opens a repository and names its environments; [`settings`] reads
//! `enact.json`, `load.rs` makes an environment's effective spec, [`deployable`] checks what
//! enact.json decides about running it and [`import`] turns a CHOReOS deployment report into a
//! recorded state. May use state, graph, spec and the leaves (never env, plan or above).

pub mod deployable;
pub mod import;
mod load;
pub mod settings;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, SourceFile, strip_bom};
use crate::error::{Error, Result};
use crate::spec::validate::is_valid_name;
pub use load::EffectiveSpec;
pub use settings::Settings;

/// The base spec, at the repository's root; its presence makes a directory a config repository.
pub const SPEC_FILE: &str = "chor.json";
/// The settings file, at the repository's root (optional).
pub const SETTINGS_FILE: &str = "enact.json";
/// The directory of the overlays, one `<env>.json` per environment.
pub const ENVS_DIR: &str = "envs";
/// Where states, locks, journals, backups and logs live unless `stateDir` says otherwise.
pub const STATE_DIR: &str = "state";
/// The environment when neither `-e` nor `defaultEnv` names one.
pub const FALLBACK_ENV: &str = "dev";

/// An opened config repository with its settings parsed and validated.
#[derive(Debug, Clone)]
pub struct ConfigRepo {
    /// The directory holding `chor.json`.
    pub root: PathBuf,
    /// `enact.json`, or the defaults when there is none.
    pub settings: Settings,
}

impl ConfigRepo {
    /// Walks up from `start` to the first directory holding `chor.json`, as cargo finds
    /// `Cargo.toml`.
    ///
    /// # Errors
    /// No such directory up to the root (the hint says how to make one).
    pub fn discover(start: &Path) -> Result<PathBuf> {
        let mut dir = Some(start);
        while let Some(d) = dir {
            if d.join(SPEC_FILE).is_file() {
                return Ok(d.to_path_buf());
            }
            dir = d.parent();
        }
        // The command that makes one where enact looked, written as a shell takes it.
        let shown = start.display().to_string();
        let shown = if shown.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+,=:@".contains(c)) {
            shown
        } else {
            format!("'{}'", shown.replace('\'', r"'\''"))
        };
        Err(Diagnostic::new(format!(
            "no config repository: neither {} nor any parent directory holds {SPEC_FILE}",
            start.display()
        ))
        .hint(format!("`enact -C {shown} init` makes one there; or pass `-C` a directory of an existing one"))
        .into())
    }

    /// Opens the repository at `root` (which must hold `chor.json`) and reads its settings.
    ///
    /// # Errors
    /// `root` holds no `chor.json`; `enact.json` cannot be read; every problem of `enact.json`,
    /// located.
    pub fn open(root: &Path) -> Result<ConfigRepo> {
        if !root.join(SPEC_FILE).is_file() {
            return Err(Diagnostic::new(format!("{} holds no {SPEC_FILE}", root.display()))
                .hint("pass `-C` a config repository, or run `enact init` there")
                .into());
        }
        let settings = match read_optional(&root.join(SETTINGS_FILE))? {
            Some(text) => Settings::parse(&SourceFile::new(SETTINGS_FILE, text))?,
            None => Settings::default(),
        };
        Ok(ConfigRepo { root: root.to_path_buf(), settings })
    }

    /// `-e`'s default: `defaultEnv` of enact.json, else `dev`.
    pub fn default_env(&self) -> String {
        self.settings.default_env.clone().unwrap_or_else(|| FALLBACK_ENV.to_string())
    }

    /// The overlay file of `env`: `envs/<env>.json` (it may not exist).
    pub fn overlay_path(&self, env: &str) -> PathBuf {
        self.root.join(ENVS_DIR).join(format!("{env}.json"))
    }

    /// `state/`, or `stateDir` of enact.json (relative to the repository).
    pub fn state_dir(&self) -> PathBuf {
        match &self.settings.state_dir {
            Some(dir) => self.root.join(dir),
            None => self.root.join(STATE_DIR),
        }
    }

    /// A warning when `stateDir` leads out of this repository and out of the git work tree
    /// around it (if any): states recorded there are not versioned with the spec, and a copy
    /// of the repository would share them. `None` when `stateDir` is unset or stays inside.
    /// The path is resolved lexically (`..` removes the component before it), so a directory
    /// that does not exist yet is judged the same.
    pub fn state_dir_warning(&self) -> Option<String> {
        let written = self.settings.state_dir.as_deref()?;
        let root = std::path::absolute(&self.root).map_or_else(|_| self.root.clone(), |r| lexical(&r));
        let dir = lexical(&root.join(written));
        // The git work tree around the repository, if any: a state directory beside the config
        // repository but inside the same git repository is versioned with it.
        let enclosing = root.ancestors().find(|a| a.join(".git").exists()).unwrap_or(&root);
        if dir.starts_with(enclosing) {
            return None;
        }
        Some(format!(
            "`stateDir` (\"{written}\") is {}, outside this repository ({}){}: the states recorded there are not \
             versioned with the spec, and every copy of the repository shares them",
            dir.display(),
            root.display(),
            if enclosing == root { "" } else { " and its git work tree" },
        ))
    }

    /// The store of this repository's recorded states.
    pub fn store(&self) -> crate::state::FileStore {
        let display = self.settings.state_dir.clone().unwrap_or_else(|| STATE_DIR.to_string());
        crate::state::FileStore::new(self.state_dir()).with_display(display)
    }

    /// Environments this repository knows: overlays, `envs` of enact.json and recorded states.
    pub fn known_envs(&self) -> BTreeSet<String> {
        let mut envs: BTreeSet<String> = self.settings.envs.keys().cloned().collect();
        for dir in [self.root.join(ENVS_DIR), self.state_dir()] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if let Some(env) = name.strip_suffix(".json")
                    && is_valid_name(env)
                {
                    envs.insert(env.to_string());
                }
            }
        }
        envs
    }

    /// Every environment of the repository: [`Self::known_envs`] and the default one, which
    /// exists without an overlay (it is then the base spec alone), so that a repository of a
    /// lone `chor.json` plans.
    pub fn environments(&self) -> BTreeSet<String> {
        let mut envs = self.known_envs();
        envs.insert(self.default_env());
        envs
    }

    /// Checks that `env` is an environment of this repository (see [`Self::environments`]),
    /// so a mistyped `-e prd` never plans, applies or records a new environment.
    ///
    /// # Errors
    /// An invalid name, or an environment that has no overlay, no entry under `envs` in
    /// enact.json, no recorded state and is not the default: the error lists the known ones, with
    /// the closest first ("did you mean `prod`?"), and says how to create one.
    pub fn require_env(&self, env: &str) -> Result<()> {
        Self::check_env_name(env)?;
        let envs = self.environments();
        if envs.contains(env) {
            return Ok(());
        }
        let list: Vec<&str> = envs.iter().map(String::as_str).collect();
        let otherwise = format!(
            "create it with `enact env new {env}` (it writes {ENVS_DIR}/{env}.json); the known environments are: {}",
            list.join(", ")
        );
        Err(Diagnostic::new(format!(
            "env `{env}` does not exist: it has no overlay ({ENVS_DIR}/{env}.json), no entry under `envs` in \
             {SETTINGS_FILE} and no recorded state"
        ))
        .hint(crate::suggest::hint(env, list.iter().copied(), &otherwise))
        .into())
    }

    /// Checks an environment name before it becomes a file name.
    ///
    /// # Errors
    /// A name that is not letters, digits, `.`, `_` and `-` (starting with a letter or digit).
    pub fn check_env_name(env: &str) -> Result<()> {
        if is_valid_name(env) {
            Ok(())
        } else {
            Err(Diagnostic::new(format!("`{}` is not a valid environment name", env.escape_debug()))
                .hint("environment names are letters, digits, `.`, `_` and `-`, like `dev` or `prod`")
                .into())
        }
    }
}

/// `path` with `.` left out and each `..` taking away the component before it, without
/// looking at the file system (an absolute path stays at its root).
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The text of a file enact reads, a leading byte order mark dropped.
///
/// # Errors
/// [`Error::Io`] naming the file when it cannot be read.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map(strip_bom).map_err(Error::io("read", path))
}

/// The text of a file enact reads (JSON, mostly), a leading byte order mark dropped; `None`
/// when the file does not exist.
///
/// # Errors
/// Any failure to read other than the file's absence.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(strip_bom(text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { action: "read", path: path.to_path_buf(), source: e }),
    }
}
