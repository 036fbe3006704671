//! Real OpenSSH servers on loopback addresses (127.0.0.X, one `sshd` each with its own host key)
//! for the ssh provider's tests, with a generated client key. Stopped when dropped.
//!
//! The hosts of one [`SshHosts`] share a home directory of their own ([`SshHosts::home`], like
//! hosts on one NFS home): their sessions get `HOME` set to it, so no test reads another's
//! files, and no session runs this machine's own shell start-up files (a `~/.bashrc` that
//! takes a lock, as pyenv's rehash does, stalls every session while another holds it).

#![allow(dead_code)]

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct SshHosts {
    pub dir: tempfile::TempDir,
    pub addresses: Vec<String>,
    pub port: u16,
    pub client_key: PathBuf,
    pub host_keys: Vec<PathBuf>,
    /// Variables every session gets besides `HOME` (`NAME=VALUE`, no spaces).
    session_env: Vec<String>,
    children: Vec<Option<Child>>,
}

/// Whether the tests can run: sshd is installed. Under `CI=true` a missing sshd is a failure,
/// never a silent skip.
pub fn available() -> bool {
    if Path::new(SSHD).exists() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{SSHD} is missing: CI must run the ssh tests (scripts/test.sh installs openssh-server)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {SSHD} is not installed; run scripts/test.sh (it installs openssh-server)"
    );
    false
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "enact-test", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}

/// `FILE.pub` (not `with_extension`: host key names hold dots).
fn pub_of(key: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pub", key.display()))
}

fn answers(address: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{address}:{port}").parse().expect("socket address");
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

impl SshHosts {
    /// Starts `n` sshds on 127.0.0.`first`, 127.0.0.`first+1`, … all on `port`.
    pub fn start(n: usize, first: u8, port: u16) -> SshHosts {
        SshHosts::start_with(n, first, port, &[])
    }

    /// [`SshHosts::start`], with `session_env` (`NAME=VALUE` each, no spaces) set in every
    /// session besides `HOME` (e.g. a `PATH` without some command).
    pub fn start_with(n: usize, first: u8, port: u16, session_env: &[String]) -> SshHosts {
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let dir = tempfile::tempdir().expect("tempdir");
        let client_key = dir.path().join("client_ed25519");
        keygen(&client_key);
        let public = std::fs::read_to_string(pub_of(&client_key)).expect("client public key");
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, public).expect("write authorized_keys");
        std::fs::create_dir(dir.path().join("home")).expect("the hosts' home directory");
        let mut hosts = SshHosts {
            addresses: Vec::new(),
            port,
            client_key,
            host_keys: Vec::new(),
            session_env: session_env.to_vec(),
            children: Vec::new(),
            dir,
        };
        for i in 0..n {
            let address = format!("127.0.0.{}", usize::from(first) + i);
            let host_key = hosts.dir.path().join(format!("host_{address}"));
            keygen(&host_key);
            hosts.addresses.push(address);
            hosts.host_keys.push(host_key);
            hosts.children.push(None);
            hosts.start_host(i);
        }
        hosts
    }

    fn config(&self, i: usize) -> PathBuf {
        let address = &self.addresses[i];
        let path = self.dir.path().join(format!("sshd_{address}.conf"));
        let text = format!(
            "ListenAddress {address}\nPort {}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             PermitRootLogin prohibit-password\nStrictModes no\nMaxSessions 100\nMaxStartups 100:30:200\n\
             Subsystem sftp internal-sftp\nSetEnv HOME={}{}\n",
            self.port,
            self.host_keys[i].display(),
            self.dir.path().join(format!("sshd_{address}.pid")).display(),
            self.dir.path().join("authorized_keys").display(),
            // One line: sshd keeps the first `SetEnv` only.
            self.home().display(),
            self.session_env.iter().map(|v| format!(" {v}")).collect::<String>(),
        );
        std::fs::write(&path, text).expect("write sshd config");
        path
    }

    /// The home directory every host's sessions share (`$HOME` there): enact keeps its
    /// packages and logs under `.enact/` in it.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// (Re)starts host `i` and waits until it accepts connections.
    pub fn start_host(&mut self, i: usize) {
        let config = self.config(i);
        let log =
            std::fs::File::create(self.dir.path().join(format!("sshd_{}.log", self.addresses[i]))).expect("sshd log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd starts");
        self.children[i] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers(&self.addresses[i], self.port) {
            assert!(Instant::now() < deadline, "sshd on {} did not start", self.addresses[i]);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops host `i` (a host going down).
    pub fn stop_host(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Gives host `i` a new host key (a reinstalled host, or an impostor) and restarts it.
    pub fn rekey_host(&mut self, i: usize) {
        self.stop_host(i);
        let key = &self.host_keys[i];
        let _ = std::fs::remove_file(key);
        let _ = std::fs::remove_file(pub_of(key));
        keygen(key);
        self.start_host(i);
    }

    /// A known_hosts file that trusts every host's current key.
    /// Makes every host refuse the client key (`allow`: accept it again).
    pub fn allow_client_key(&self, allow: bool) {
        let public = std::fs::read_to_string(pub_of(&self.client_key)).expect("client public key");
        let text = if allow { public } else { String::new() };
        std::fs::write(self.dir.path().join("authorized_keys"), text).expect("write authorized_keys");
    }

    pub fn known_hosts(&self) -> String {
        let mut text = String::new();
        for (address, key) in self.addresses.iter().zip(&self.host_keys) {
            let public = std::fs::read_to_string(pub_of(key)).expect("host public key");
            let mut parts = public.split_whitespace();
            let (algorithm, body) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            text.push_str(&format!("[{address}]:{} {algorithm} {body}\n", self.port));
        }
        text
    }

    /// The `hosts` list of an ssh account in enact.json.
    pub fn account_hosts(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.addresses
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "address": a, "port": self.port, "user": "root",
                        "privateKey": self.client_key.to_string_lossy()
                    })
                })
                .collect(),
        )
    }
}

impl Drop for SshHosts {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.stop_host(i);
        }
    }
}
