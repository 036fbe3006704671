//! Host keys: checking a host's key against the account's known_hosts file (OpenSSH format)
//! during the key exchange ([`Verifier`]), what can be wrong with it ([`KeyProblem`]), and
//! `enact hosts trust`, which records the keys of an account's hosts.
//!
//! Depends on russh's known_hosts support; the connection itself is made in `session`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use russh::Disconnect;
use russh::client;
use russh::keys::{HashAlg, PublicKeyOrCertificate};

use super::SshProvider;
use super::session::ConnectError;

/// Expands `~/` with `$HOME`; a relative path is taken from the config repository.
pub fn expand_path(path: &str, repo_root: &Path) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/") {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
        return home.join(rest);
    }
    let p = PathBuf::from(path);
    if p.is_absolute() { p } else { repo_root.join(p) }
}

/// The known_hosts file of an account: `knownHosts`, else `~/.ssh/known_hosts`; `~/` is the
/// home directory, a relative path is taken from the config repository (`repo_root`).
pub fn known_hosts_of(known_hosts: Option<&str>, repo_root: &Path) -> PathBuf {
    expand_path(known_hosts.unwrap_or("~/.ssh/known_hosts"), repo_root)
}

/// Removes every entry of `hosts` (addresses reached on `port`) from the known_hosts file
/// `path` (OpenSSH format: a line's first field lists its host patterns, comma-separated, a
/// port other than 22 written `[host]:port`). A line naming other hosts too keeps them. The file
/// is rewritten atomically, and only when something goes. Returns how many entries went; a
/// missing file has none.
///
/// For machines enact made and then terminated: a later machine given the same address has
/// another key, which would be refused as changed.
///
/// # Errors
/// The file cannot be read or rewritten (named, with the path).
pub fn forget_hosts(path: &Path, hosts: &[&str], port: u16) -> crate::Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(crate::Error::io("read known_hosts", path)(e)),
    };
    let names: Vec<String> =
        hosts.iter().map(|h| if port == 22 { (*h).to_string() } else { format!("[{h}]:{port}") }).collect();
    let mut gone = 0;
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        let Some((patterns, rest)) = trimmed.split_once(char::is_whitespace).filter(|_| !trimmed.starts_with('#'))
        else {
            kept.push_str(line);
            kept.push('\n');
            continue;
        };
        let left: Vec<&str> = patterns.split(',').filter(|p| !names.iter().any(|n| n == p)).collect();
        let removed = patterns.split(',').count() - left.len();
        gone += removed;
        if removed == 0 {
            kept.push_str(line);
            kept.push('\n');
        } else if !left.is_empty() {
            kept.push_str(&left.join(","));
            kept.push(' ');
            kept.push_str(rest);
            kept.push('\n');
        }
    }
    if gone > 0 {
        crate::state::store::write_atomic(path, kept.as_bytes())?;
    }
    Ok(gone)
}

/// What was wrong with a host's key, found during the key exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    /// The key is not in known_hosts (nor another key of the host): it is refused unless new
    /// keys are accepted.
    Unknown {
        /// The key's algorithm, e.g. `ssh-ed25519`.
        algorithm: String,
        /// Its SHA-256 fingerprint, `SHA256:…` as OpenSSH shows it.
        fingerprint: String,
    },
    /// known_hosts holds another key for the host: always refused.
    Changed {
        /// The SHA-256 fingerprint of the key the host presented.
        fingerprint: String,
        /// The line of known_hosts (from 1) that holds the recorded key.
        line: usize,
    },
    /// known_hosts could not be read, or a new key not recorded in it: why.
    Unreadable(String),
}

/// Checks the server's key against known_hosts; records what it found.
pub(super) struct Verifier {
    /// The host's address, as known_hosts names it.
    pub(super) host: String,
    /// Its SSH port (known_hosts names a port other than 22 as `[host]:port`).
    pub(super) port: u16,
    /// The known_hosts file (OpenSSH format).
    pub(super) known_hosts: PathBuf,
    /// Record an unknown key instead of refusing it (`--accept-new-host-keys`, `hosts trust`).
    pub(super) accept_new: bool,
    /// What was wrong with the key, for the error the refused connection gives.
    pub(super) problem: Arc<Mutex<Option<KeyProblem>>>,
    /// The key recorded (`<algorithm> <fingerprint>`), when an unknown one was accepted.
    pub(super) learned: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let key = key.public_key();
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let verdict = russh::keys::check_known_hosts_path(&self.host, self.port, &key, &self.known_hosts);
        let problem = match verdict {
            Ok(true) => return Ok(true),
            Ok(false) if self.accept_new => {
                return match russh::keys::known_hosts::learn_known_hosts_path(
                    &self.host,
                    self.port,
                    &key,
                    &self.known_hosts,
                ) {
                    Ok(()) => {
                        if let Ok(mut learned) = self.learned.lock() {
                            *learned = Some(format!("{} {fingerprint}", key.algorithm()));
                        }
                        Ok(true)
                    }
                    Err(e) => {
                        if let Ok(mut p) = self.problem.lock() {
                            *p = Some(KeyProblem::Unreadable(format!(
                                "cannot record the key in {}: {e}",
                                self.known_hosts.display()
                            )));
                        }
                        Ok(false)
                    }
                };
            }
            Ok(false) => KeyProblem::Unknown { algorithm: key.algorithm().to_string(), fingerprint },
            Err(russh::keys::Error::KeyChanged { line }) => KeyProblem::Changed { fingerprint, line },
            Err(e) => KeyProblem::Unreadable(format!("cannot read {}: {e}", self.known_hosts.display())),
        };
        if let Ok(mut p) = self.problem.lock() {
            *p = Some(problem);
        }
        Ok(false)
    }
}

/// What `enact hosts trust` did for a host it could connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trusted {
    /// Its key was unknown and is now recorded in known_hosts: `<algorithm> <fingerprint>`.
    Recorded(String),
    /// Its key was already in known_hosts.
    Already,
}

impl std::fmt::Display for Trusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trusted::Recorded(key) => write!(f, "trusted {key}"),
            Trusted::Already => f.write_str("already trusted"),
        }
    }
}

impl SshProvider {
    /// Connects to every host of the account and records unknown host keys (`enact hosts trust`):
    /// for each host (`user@address:port`), what was done, or why the host could not be trusted
    /// (a changed key is never replaced).
    pub fn trust_hosts(&self) -> Vec<(String, Result<Trusted, ConnectError>)> {
        self.account
            .hosts
            .iter()
            .map(|host| {
                let result = self.runtime.block_on(async {
                    match self.connect(host, true).await {
                        Ok((connection, learned)) => {
                            let _ = connection.handle.disconnect(Disconnect::ByApplication, "", "en").await;
                            Ok(learned.map_or(Trusted::Already, Trusted::Recorded))
                        }
                        Err(e) => Err(e),
                    }
                });
                (self.describe(host), result)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_hosts_removes_their_entries_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(
            &path,
            "# enact\n10.0.0.1 ssh-ed25519 AAAA1\n10.0.0.10 ssh-ed25519 AAAA10\n[10.0.0.1]:2222 ssh-ed25519 AAAA2\n10.0.0.2,10.0.0.1 ssh-rsa AAAA3\n\n",
        )
        .unwrap();
        assert_eq!(forget_hosts(&path, &["10.0.0.1"], 22).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# enact\n10.0.0.10 ssh-ed25519 AAAA10\n[10.0.0.1]:2222 ssh-ed25519 AAAA2\n10.0.0.2 ssh-rsa AAAA3\n\n"
        );
        assert_eq!(forget_hosts(&path, &["10.0.0.1"], 2222).unwrap(), 1);
        assert_eq!(forget_hosts(&path, &["10.0.0.9"], 22).unwrap(), 0);
        assert_eq!(forget_hosts(&dir.path().join("none"), &["10.0.0.1"], 22).unwrap(), 0);
    }

    #[test]
    fn paths_expand_home_and_the_repository() {
        let root = Path::new("/repo");
        assert_eq!(expand_path("keys/id", root), PathBuf::from("/repo/keys/id"));
        assert_eq!(expand_path("/abs/id", root), PathBuf::from("/abs/id"));
        assert!(expand_path("~/.ssh/id", root).ends_with(".ssh/id"));
        assert_eq!(known_hosts_of(None, root), expand_path("~/.ssh/known_hosts", root));
    }

    #[test]
    fn what_trust_did_reads_as_before() {
        assert_eq!(Trusted::Recorded("ssh-ed25519 SHA256:x".into()).to_string(), "trusted ssh-ed25519 SHA256:x");
        assert_eq!(Trusted::Already.to_string(), "already trusted");
    }
}
