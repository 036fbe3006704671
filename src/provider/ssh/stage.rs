//! Packages on an ssh host: a file of this machine is uploaded once per content and host, under
//! `$HOME/.enact/<env>/packages/<digest>/` (up to [`INLINE_MAX`] bytes as base64 inside the
//! command that looks for it, larger ones over SFTP); an `http(s)://` package is fetched by the
//! host itself (curl or wget); both are installed by an atomic rename, so hosts sharing a
//! home directory never see half a package. Also where enact keeps its files on a host
//! (`$HOME/.enact/<env>`).
//!
//! Depends on `session` (the connection, its SFTP session and shells) and `remote_script`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use russh_sftp::client::SftpSession;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::SshProvider;
use super::remote_script::quote;
use super::session::Connection;
use crate::provider::{Package, ProviderError, ProviderResult, package};
use crate::repo::settings::SshHost;

/// How long one package upload to a host may take, from connecting to installing it.
pub const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The largest package, in bytes, that goes to a host inside a shell command (base64, one round
/// trip) rather than over SFTP (a session of its own and three round trips). Its base64 text,
/// 4/3 as long, stays far below a shell's limits.
pub const INLINE_MAX: usize = 64 * 1024;

/// The `elif` branch of the command that looks for a package (run in the home directory): when
/// the host has `base64`, writes `bytes` to `part` (a name of this writer's own), makes it
/// executable, renames it to `relative` and prints `installed`; without `base64` it does nothing,
/// so the package goes over SFTP. A failed write removes `part` and fails the command.
fn inline_install(bytes: &[u8], relative: &str, part: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let (p, r) = (quote(part), quote(relative));
    // The base64 alphabet has no quote: the text goes to printf (a builtin) as one word.
    format!(
        " elif command -v base64 >/dev/null 2>&1; then \
         if printf %s '{encoded}' | base64 -d > {p} && chmod 755 {p} && mv -f {p} {r}; then echo installed; \
         else rm -f {p}; exit 1; fi;"
    )
}

impl SshProvider {
    /// The directory enact keeps packages and logs in on a host: `$HOME/.enact/<env>`,
    /// absolute, so commands need no shell expansion.
    ///
    /// # Errors
    /// The host cannot be reached, or its home directory is not absolute.
    pub(super) fn base(&self, host: &SshHost, env: &str) -> ProviderResult<String> {
        let who = self.describe(host);
        let home = self.runtime.block_on(async {
            let connection = self.connection(host).await?;
            connection
                .home
                .get_or_try_init(|| async {
                    let output = self.run_async(host, "finding the home directory", "printf %s \"$HOME\"").await?;
                    let home = output.stdout.trim_end_matches('/').to_string();
                    if output.status != Some(0) || !home.starts_with('/') {
                        return Err(ProviderError::new(format!(
                            "host {who}: the home directory `{home}` is not absolute{}",
                            if output.stderr.trim().is_empty() {
                                String::new()
                            } else {
                                format!(": {}", output.stderr.trim())
                            }
                        )));
                    }
                    Ok(home)
                })
                .await
                .cloned()
        })?;
        Ok(format!("{home}/.enact/{env}"))
    }

    /// The host's SFTP session, opened once.
    async fn sftp<'c>(&self, host: &SshHost, connection: &'c Connection) -> ProviderResult<&'c SftpSession> {
        let who = self.describe(host);
        let begun = Instant::now();
        let session = connection
            .sftp
            .get_or_try_init(|| async {
                let channel = connection.handle.channel_open_session().await?;
                channel.request_subsystem(true, "sftp").await?;
                let session = SftpSession::new(channel.into_stream())
                    .await
                    .map_err(|e| russh::Error::from(std::io::Error::other(e.to_string())));
                crate::timing::mark(Some(begun.elapsed()), || format!("ssh {who}: SFTP session opened"));
                session
            })
            .await
            .map_err(|e| ProviderError::new(format!("host {who}: cannot open SFTP: {e}")))?;
        Ok(session)
    }

    /// Uploads a file over SFTP to `relative` (a path under the home directory) once per content
    /// and host; returns its absolute path. The command that looks for the file also says where
    /// home is, so a first upload costs no extra round trip for it.
    ///
    /// # Errors
    /// The package cannot be read here, or the host cannot be reached or written to.
    fn upload(&self, host: &SshHost, local: &Path, relative: &str) -> ProviderResult<String> {
        let key = (self.describe(host), relative.to_string());
        // One upload of a file to a host at a time; the others wait and then find it there.
        let lock = {
            let mut locks = self.upload_locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(locks.entry(key.clone()).or_default())
        };
        let _held = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.uploaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&key) {
            let home = self.runtime.block_on(async { self.connection(host).await.map(|c| c.home.get().cloned()) })?;
            if let Some(home) = home {
                return Ok(format!("{home}/{relative}"));
            }
        }
        let bytes = std::fs::read(local)
            .map_err(|e| ProviderError::new(format!("cannot read package {}: {e}", local.display())))?;
        let dir = relative.rsplit_once('/').map_or(".", |(d, _)| d);
        let who = self.describe(host);
        let upload = async {
            let connection = self.connection(host).await?;
            let begun = Instant::now();
            // Hosts may share a home directory (NFS), and so may applies of several environments
            // or repositories: each writer uploads under a name of its own, and the rename that
            // installs the package is atomic, so the last one wins with the same bytes.
            let part_name = format!("{relative}.{}.part", crate::state::store::new_lineage());
            // A small package travels inside the command that looks for it: one round trip, no
            // SFTP session. A larger one (or a host without `base64`) goes over SFTP, which
            // opens while the host looks for the package.
            let inline = (bytes.len() <= INLINE_MAX).then(|| inline_install(&bytes, relative, &part_name));
            let prepare = format!(
                "printf '%s\\n' \"$HOME\"; cd && mkdir -p {} && if test -f {}; then echo present;{} fi",
                quote(dir),
                quote(relative),
                inline.as_deref().unwrap_or_default(),
            );
            let (present, sftp) = if inline.is_some() {
                (self.run_async(host, "preparing the package directory", &prepare).await, None)
            } else {
                let (present, sftp) = tokio::join!(
                    self.run_async(host, "preparing the package directory", &prepare),
                    self.sftp(host, &connection)
                );
                (present, Some(sftp))
            };
            let present = present?;
            let mut lines = present.stdout.lines();
            let home = lines.next().unwrap_or_default().trim_end_matches('/').to_string();
            if present.status != Some(0) {
                return Err(ProviderError::new(format!(
                    "host {who}: {} failed (exit {}): {}",
                    if inline.is_some() { "installing the package" } else { "preparing the package directory" },
                    present.status.map_or("?".to_string(), |s| s.to_string()),
                    present.stderr.trim()
                )));
            }
            if !home.starts_with('/') {
                return Err(ProviderError::new(format!("host {who}: the home directory `{home}` is not absolute")));
            }
            let _ = connection.home.set(home.clone());
            let remote = format!("{home}/{relative}");
            match lines.next() {
                Some("present") => return Ok(remote),
                Some("installed") => {
                    crate::timing::mark(Some(begun.elapsed()), || {
                        format!("ssh {who}: package uploaded with the command ({} bytes)", bytes.len())
                    });
                    return Ok(remote);
                }
                _ => {}
            }
            let sftp = match sftp {
                Some(sftp) => sftp,
                None => self.sftp(host, &connection).await,
            };
            self.upload_over_sftp(host, sftp?, &bytes, &format!("{home}/{part_name}"), &remote).await?;
            crate::timing::mark(Some(begun.elapsed()), || {
                format!("ssh {who}: package uploaded ({} bytes)", bytes.len())
            });
            Ok(remote)
        };
        // A host that stops answering half-way (an SFTP session that never opens, a write that
        // never completes) fails the start instead of holding the apply for ever.
        let remote = self.runtime.block_on(async {
            tokio::time::timeout(UPLOAD_TIMEOUT, upload).await.unwrap_or_else(|_| {
                Err(ProviderError::new(format!(
                    "host {who}: uploading the package did not finish within {} s; the host or its SFTP server does not answer",
                    UPLOAD_TIMEOUT.as_secs()
                )))
            })
        })?;
        self.uploaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key);
        Ok(remote)
    }

    /// Writes `bytes` over SFTP to `partial` (a name of this writer's own), then makes it
    /// executable and renames it to `remote` (both absolute).
    ///
    /// # Errors
    /// The file cannot be created, written or installed on the host.
    async fn upload_over_sftp(
        &self,
        host: &SshHost,
        sftp: &SftpSession,
        bytes: &[u8],
        partial: &str,
        remote: &str,
    ) -> ProviderResult<()> {
        let who = self.describe(host);
        let mut file = sftp
            .create(partial)
            .await
            .map_err(|e| ProviderError::new(format!("host {who}: cannot create {partial}: {e}")))?;
        file.write_all(bytes)
            .await
            .map_err(|e| ProviderError::new(format!("host {who}: cannot upload {partial}: {e}")))?;
        file.shutdown().await.map_err(|e| ProviderError::new(format!("host {who}: cannot upload {partial}: {e}")))?;
        let install = format!("chmod 755 {p} && mv -f {p} {r}", p = quote(partial), r = quote(remote));
        let installed = self.run_async(host, "installing the package", &install).await?;
        if installed.status != Some(0) {
            return Err(ProviderError::new(format!(
                "host {who}: installing the package failed (exit {}): {}",
                installed.status.map_or("?".to_string(), |s| s.to_string()),
                installed.stderr.trim()
            )));
        }
        Ok(())
    }

    /// Puts the package on the host and returns its remote path.
    ///
    /// # Errors
    /// There is no package, it cannot be read here, or the host cannot store or fetch it.
    pub(super) fn stage(&self, host: &SshHost, env: &str, service: &str, package: &Package) -> ProviderResult<String> {
        match package {
            Package::Path(local) => {
                let bytes = std::fs::read(local)
                    .map_err(|e| ProviderError::new(format!("cannot read package {}: {e}", local.display())))?;
                let digest: String = Sha256::digest(&bytes).iter().take(6).map(|b| format!("{b:02x}")).collect();
                let name =
                    local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "package".into());
                // Named by content: one upload per host, whichever services share the package.
                let _ = service;
                self.upload(host, local, &format!(".enact/{env}/packages/{digest}/{name}"))
            }
            Package::None => Err(ProviderError::new("the ssh provider needs a package to run")),
            Package::Url(url) => {
                let digest: String =
                    Sha256::digest(url.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect();
                let name = package::file_name_of(url);
                let remote = format!("{}/packages/{service}-{digest}/{name}", self.base(host, env)?);
                let dir = remote.rsplit_once('/').map_or(".", |(d, _)| d);
                let partial = format!("{remote}.{}.part", crate::state::store::new_lineage());
                let (r, u, p) = (quote(&remote), quote(url), quote(&partial));
                self.exec_ok(
                    host,
                    &format!(
                        "mkdir -p {d} && (test -f {r} || {{ (curl -fsSL --netrc-optional -o {p} {u} || wget -q -O {p} {u}) && chmod 755 {p} && mv -f {p} {r}; }})",
                        d = quote(dir)
                    ),
                    "fetching the package",
                )?;
                Ok(remote)
            }
        }
    }
}
