//! A real EC2 API emulator for the ec2 provider's tests: moto's server (`moto_server`, from PyPI,
//! installed by `scripts/moto.sh`), started on 127.0.0.1 on a free port and stopped when dropped.

#![allow(dead_code)]

use std::io::Write as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `scripts/moto.sh` puts `moto_server` (or `ENACT_MOTO_SERVER`).
pub fn server_path() -> PathBuf {
    if let Some(path) = std::env::var_os("ENACT_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = std::env::var_os("ENACT_MOTO_VENV").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        cache.join("enact").join("moto-venv")
    });
    venv.join("bin").join("moto_server")
}

/// Whether the emulator is installed. Under `CI=true` a missing emulator is a failure, never a
/// silent skip.
pub fn available() -> bool {
    let path = server_path();
    if path.exists() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{} is missing: CI must run the ec2 tests (scripts/test.sh runs scripts/moto.sh)", path.display());
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: the EC2 emulator {} is not installed; run scripts/moto.sh (scripts/test.sh does)",
        path.display()
    );
    false
}

/// A running emulator.
pub struct Moto {
    pub endpoint: String,
    pub port: u16,
    /// The network namespace it runs in, if not this process's.
    pub netns: Option<String>,
    child: Child,
}

/// `program` run in network namespace `netns` (through `ip netns exec`), or as it is.
pub fn command_in(netns: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match netns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

impl Moto {
    /// Starts `moto_server` on 127.0.0.1 and waits until it answers (about 1–2 s).
    pub fn start() -> Moto {
        Moto::start_in(None)
    }

    /// Starts it on 127.0.0.1 of network namespace `netns` (the end-to-end test's).
    pub fn start_in(netns: Option<&str>) -> Moto {
        let port = free_port();
        let address = "127.0.0.1";
        let child = command_in(netns, server_path())
            .args(["-H", address, "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let moto = Moto { endpoint: format!("http://{address}:{port}"), port, netns: netns.map(str::to_string), child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !moto.answers() {
            assert!(Instant::now() < deadline, "moto_server did not answer on {address}:{port} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn answers(&self) -> bool {
        match &self.netns {
            None => {
                let addr = format!("127.0.0.1:{}", self.port).parse().expect("socket address");
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            }
            Some(_) => self
                .python(&format!(
                    "import socket\nsocket.create_connection(('127.0.0.1', {}), timeout=0.5)\n",
                    self.port
                ))
                .status
                .success(),
        }
    }

    /// Runs a Python script with the emulator's Python (boto3 is there), in its namespace.
    pub fn python(&self, script: &str) -> std::process::Output {
        command_in(self.netns.as_deref(), server_path().with_file_name("python"))
            .arg("-c")
            .arg(script)
            .output()
            .expect("python runs")
    }

    /// Every instance the emulator knows, as (id, state name, tags as `key=value`), from its
    /// own EC2 API (through boto3 in the emulator's Python, independent of enact's client).
    pub fn instances(&self) -> Vec<(String, String, Vec<String>)> {
        let script = format!(
            "import boto3\nc=boto3.client('ec2',endpoint_url='{}',region_name='us-east-1',aws_access_key_id='t',aws_secret_access_key='t')\n\
             for r in (r for p in c.get_paginator('describe_instances').paginate() for r in p['Reservations']):\n  for i in r['Instances']:\n    \
             print(r['ReservationId'], i['InstanceId'], i['State']['Name'], ' '.join(t['Key']+'='+t['Value'] for t in i.get('Tags',[])))\n",
            self.endpoint
        );
        let output = self.python(&script);
        assert!(output.status.success(), "describe failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                let mut parts = line.split(' ');
                let _reservation = parts.next();
                let id = parts.next().unwrap_or_default().to_string();
                let state = parts.next().unwrap_or_default().to_string();
                (id, state, parts.filter(|t| !t.is_empty()).map(str::to_string).collect())
            })
            .collect()
    }

    /// How many reservations the emulator holds: one per `RunInstances` call that made
    /// anything.
    pub fn reservations(&self) -> usize {
        let script = format!(
            "import boto3\nc=boto3.client('ec2',endpoint_url='{}',region_name='us-east-1',aws_access_key_id='t',aws_secret_access_key='t')\n\
             print(sum(len(p['Reservations']) for p in c.get_paginator('describe_instances').paginate()))\n",
            self.endpoint
        );
        let output = self.python(&script);
        assert!(output.status.success(), "describe failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().parse().expect("a count")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy in front of the emulator that answers the first `throttled` requests with EC2's
/// throttling error (HTTP 503, `RequestLimitExceeded`) and passes the rest on; it writes down
/// the action of every request it saw. Written in the emulator's Python.
pub struct ThrottlingProxy {
    pub endpoint: String,
    child: Child,
    count_file: PathBuf,
    _dir: tempfile::TempDir,
}

const PROXY: &str = r#"
import http.server, sys, urllib.parse, urllib.request
target, port, throttled, count_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
seen = 0
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        global seen
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        seen += 1
        action = urllib.parse.parse_qs(body.decode()).get("Action", ["?"])[0]
        with open(count_file, "a") as f:
            f.write(action + "\n")
        if seen <= throttled:
            out = (b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>RequestLimitExceeded</Code>'
                   b'<Message>Request limit exceeded.</Message></Error></Errors><RequestID>t</RequestID></Response>')
            status = 503
        else:
            req = urllib.request.Request(target + self.path, data=body, method="POST",
                headers={k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")})
            with urllib.request.urlopen(req) as r:
                out, status = r.read(), r.status
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

impl ThrottlingProxy {
    /// Starts the proxy in front of `moto`, throttling its first `throttled` requests.
    pub fn start(moto: &Moto, throttled: u32) -> ThrottlingProxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let count_file = dir.path().join("count");
        let port = free_port();
        let child = command_in(moto.netns.as_deref(), server_path().with_file_name("python"))
            .arg("-c")
            .arg(PROXY)
            .args([&moto.endpoint, &port.to_string(), &throttled.to_string()])
            .arg(&count_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("the proxy starts");
        let addr = format!("127.0.0.1:{port}").parse().expect("socket address");
        let deadline = Instant::now() + Duration::from_secs(30);
        let up = || match &moto.netns {
            None => TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
            Some(_) => moto
                .python(&format!("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n"))
                .status
                .success(),
        };
        while !up() {
            assert!(Instant::now() < deadline, "the throttling proxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        ThrottlingProxy { endpoint: format!("http://127.0.0.1:{port}"), child, count_file, _dir: dir }
    }

    /// How many requests reached the proxy.
    pub fn seen(&self) -> u32 {
        u32::try_from(self.actions().len()).unwrap_or(u32::MAX)
    }

    /// The action of every request that reached the proxy, in order (`RunInstances`, …).
    pub fn actions(&self) -> Vec<String> {
        std::fs::read_to_string(&self.count_file).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

impl Drop for ThrottlingProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
