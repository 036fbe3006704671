//! Packages: a path relative to the config repository, a `file://` URI, or an `http(s)://` URL
//! (which the local provider fetches once into `state/.cache/packages/`, and a remote node
//! fetches itself).

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::provider::Package;

/// Where a service's package is: a file of this machine (checked to exist) or a URL.
pub fn locate(uri: &str, repo_root: &Path) -> Result<Package, String> {
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return Ok(Package::Url(uri.to_string()));
    }
    let path = match uri.strip_prefix("file://") {
        Some(p) => Path::new(p).to_path_buf(),
        None => repo_root.join(uri),
    };
    if !path.is_file() {
        return Err(format!(
            "packageUri `{uri}`: no such file ({}); fix the path (relative to the config repository)",
            path.display()
        ));
    }
    path.canonicalize().map(Package::Path).map_err(|e| format!("packageUri `{uri}`: {e}"))
}

/// Fetches an `http://` package into `cache_dir/packages/` once, for the local provider.
pub fn fetch_cached(url: &str, cache_dir: &Path) -> Result<String, String> {
    if url.starts_with("https://") {
        return Err(format!(
            "packageUri `{url}`: this build fetches packages over http:// only; download it into the config repository and give its path"
        ));
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

fn fetch(url: &str, cache_dir: &Path) -> Result<String, String> {
    let digest: String = Sha256::digest(url.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
    let name = file_name_of(url);
    let dir = cache_dir.join("packages");
    let path = dir.join(format!("{digest}-{name}"));
    if path.is_file() {
        return Ok(path.to_string_lossy().into_owned());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut request = ureq::get(url);
    if let Some(authorization) = netrc_authorization(url) {
        request = request.header("Authorization", authorization);
    }
    let mut response = request.call().map_err(|e| format!("cannot fetch package {url}: {e}"))?;
    let mut bytes = Vec::new();
    response.body_mut().as_reader().read_to_end(&mut bytes).map_err(|e| format!("cannot fetch package {url}: {e}"))?;
    crate::state::store::write_atomic(&path, &bytes).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
    Ok(path.to_string_lossy().into_owned())
}
