//! Packages on this machine: a path relative to the config repository, a `file://` URI, or an
//! `http://` URL fetched once into `state/.cache/packages/`.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The local path of a package.
pub fn resolve(uri: &str, repo_root: &Path, state_dir: &Path) -> Result<String, String> {
    if uri.starts_with("https://") {
        return Err(format!(
            "packageUri `{uri}`: this build fetches packages over http:// only; download it into the config repository and give its path"
        ));
    }
    if uri.starts_with("http://") {
        return fetch(uri, state_dir);
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
    let path = path
        .canonicalize()
        .map_err(|e| format!("packageUri `{uri}`: {e}"))?;
    Ok(path.to_string_lossy().into_owned())
}

fn fetch(url: &str, state_dir: &Path) -> Result<String, String> {
    let digest: String = Sha256::digest(url.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let name: String = url
        .rsplit('/')
        .next()
        .unwrap_or("package")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    let dir = state_dir.join(".cache").join("packages");
    let path = dir.join(format!("{digest}-{name}"));
    if path.is_file() {
        return Ok(path.to_string_lossy().into_owned());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut response = ureq::get(url)
        .call()
        .map_err(|e| format!("cannot fetch package {url}: {e}"))?;
    let mut bytes = Vec::new();
    response
        .body_mut()
        .as_reader()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot fetch package {url}: {e}"))?;
    crate::state::store::write_atomic(&path, &bytes).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
    Ok(path.to_string_lossy().into_owned())
}
