//! Packages: a path relative to the config repository, a `file://` URI, or an `http(s)://` URL
//! (which the local provider fetches once into `state/.cache/packages/`, and a remote node
//! fetches itself). The executor locates a service's package once per apply ([`locate`]); the
//! providers carry it to where the instance runs.
//!
//! Depends on the state store (the atomic write of a fetched package) and the leaves.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Package, ProviderError};

/// A package that cannot be found or fetched: the `packageUri` it is about and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A path (or `file://` URI) that names no file: fix the path.
    #[error("packageUri `{uri}`: no such file ({}); fix the path (relative to the config repository)", path.display())]
    Missing {
        /// The `packageUri` of the spec.
        uri: String,
        /// The file it names on this machine.
        path: PathBuf,
    },
    /// The file exists but its full path cannot be resolved (a directory on the way cannot be
    /// read).
    #[error("packageUri `{uri}`: {source}")]
    Unresolvable {
        /// The `packageUri` of the spec.
        uri: String,
        /// Why the path cannot be resolved.
        source: std::io::Error,
    },
    /// An `https://` URL, which this build does not fetch for the local provider: download the
    /// package into the config repository and give its path.
    #[error(
        "packageUri `{url}`: this build fetches packages over http:// only; download it into the config repository and give its path"
    )]
    HttpsUnsupported {
        /// The `packageUri` of the spec.
        url: String,
    },
    /// The download cache directory cannot be made.
    #[error("cannot create {}: {source}", dir.display())]
    CacheDirectory {
        /// `state/.cache/packages`.
        dir: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// The download failed (no answer, an error status, a cut connection).
    #[error("cannot fetch package {url}: {reason}")]
    Fetch {
        /// The `packageUri` of the spec.
        url: String,
        /// What the HTTP client said.
        reason: String,
    },
    /// The downloaded package cannot be written into the cache.
    #[error("{0}")]
    Write(#[source] crate::Error),
}

impl From<PackageError> for ProviderError {
    fn from(e: PackageError) -> Self {
        ProviderError::new(e.to_string())
    }
}

/// Where a service's package is: a file of this machine (checked to exist, made absolute) or an
/// `http(s)://` URL. `uri` is the spec's `packageUri`; a relative path is taken from
/// `repo_root`, the config repository.
///
/// # Errors
/// [`PackageError::Missing`] when the path names no file, [`PackageError::Unresolvable`] when
/// it cannot be made absolute.
pub fn locate(uri: &str, repo_root: &Path) -> Result<Package, PackageError> {
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return Ok(Package::Url(uri.to_string()));
    }
    let path = match uri.strip_prefix("file://") {
        Some(p) => Path::new(p).to_path_buf(),
        None => repo_root.join(uri),
    };
    if !path.is_file() {
        return Err(PackageError::Missing { uri: uri.to_string(), path });
    }
    path.canonicalize().map(Package::Path).map_err(|source| PackageError::Unresolvable { uri: uri.to_string(), source })
}

/// Fetches an `http://` package into `cache_dir/packages/` once (the file is named by a digest
/// of the URL and the URL's last segment, and made executable), for the local provider; the
/// path of the cached file. Credentials for the host come from `~/.netrc`.
///
/// # Errors
/// [`PackageError::HttpsUnsupported`] for an `https://` URL; otherwise the cache directory
/// cannot be made, the download fails or the file cannot be written.
pub fn fetch_cached(url: &str, cache_dir: &Path) -> Result<String, PackageError> {
    if url.starts_with("https://") {
        return Err(PackageError::HttpsUnsupported { url: url.to_string() });
    }
    fetch(url, cache_dir)
}

/// The `Authorization: Basic …` value for `url`'s host from `~/.netrc` (or the file `NETRC`
/// names), as curl and wget use it: the entry of the host, else the `default` entry; `None`
/// when there is no file, no entry or no login. The credentials never leave this header.
fn netrc_authorization(url: &str) -> Option<String> {
    use base64::Engine as _;
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let netrc = netrc::Netrc::new().ok()?;
    let entry = netrc.hosts.get(host).or_else(|| netrc.hosts.get("default"))?;
    if entry.login.is_empty() {
        return None;
    }
    let pair = format!("{}:{}", entry.login, entry.password);
    Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
}

/// The last segment of a package URL, kept to the characters safe in a file name (and in a
/// remote command line).
pub fn file_name_of(url: &str) -> String {
    url.rsplit('/')
        .next()
        .unwrap_or("package")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect()
}

fn fetch(url: &str, cache_dir: &Path) -> Result<String, PackageError> {
    let digest: String = Sha256::digest(url.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
    let name = file_name_of(url);
    let dir = cache_dir.join("packages");
    let path = dir.join(format!("{digest}-{name}"));
    if path.is_file() {
        return Ok(path.to_string_lossy().into_owned());
    }
    std::fs::create_dir_all(&dir).map_err(|source| PackageError::CacheDirectory { dir: dir.clone(), source })?;
    let mut request = ureq::get(url);
    if let Some(authorization) = netrc_authorization(url) {
        request = request.header("Authorization", authorization);
    }
    let failed =
        |reason: &dyn std::fmt::Display| PackageError::Fetch { url: url.to_string(), reason: reason.to_string() };
    let mut response = request.call().map_err(|e| failed(&e))?;
    let mut bytes = Vec::new();
    response.body_mut().as_reader().read_to_end(&mut bytes).map_err(|e| failed(&e))?;
    crate::state::store::write_atomic(&path, &bytes).map_err(PackageError::Write)?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
    Ok(path.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_package_names_its_uri_and_the_path_looked_at() {
        let dir = tempfile::tempdir().unwrap();
        let e = locate("packages/nope.jar", dir.path()).unwrap_err();
        assert!(
            matches!(&e, PackageError::Missing { uri, path } if uri == "packages/nope.jar" && path.ends_with("packages/nope.jar"))
        );
        assert!(e.to_string().ends_with("; fix the path (relative to the config repository)"), "{e}");
        std::fs::write(dir.path().join("a.jar"), b"x").unwrap();
        assert!(matches!(locate("a.jar", dir.path()), Ok(Package::Path(p)) if p.is_absolute()));
        assert_eq!(locate("https://h/a.jar", dir.path()).unwrap(), Package::Url("https://h/a.jar".into()));
    }

    #[test]
    fn https_is_refused_for_the_local_cache_and_file_names_are_kept_safe() {
        let dir = tempfile::tempdir().unwrap();
        let e = fetch_cached("https://h/a.jar", dir.path()).unwrap_err();
        assert!(matches!(&e, PackageError::HttpsUnsupported { url } if url == "https://h/a.jar"));
        assert_eq!(file_name_of("http://h/x/a b;$(id).jar"), "abid.jar");
    }
}
