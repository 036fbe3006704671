//! Secrets stay out of specs, plans, state and logs: a package behind HTTP basic auth is
//! fetched with the credentials `~/.netrc` (here the file `NETRC` names) gives for its host,
//! and the password shows up in no output, no state, no log and no instance's environment.
//! (Credentials written into a URI are refused at validation: `tests/bad/160-…`, `161-…`.)

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::local::*;
use serde_json::json;

const PASSWORD: &str = "pw-never-shown-7f3a";

/// A Python HTTP server on 127.0.0.1 (a free port) that serves `dir` only to `deploy:PASSWORD`
/// (HTTP basic auth) and answers 401 otherwise. Returns it and its port.
fn basic_auth_server(dir: &std::path::Path) -> (Child, u16) {
    let script = r#"
import base64, http.server, functools, sys
want = "Basic " + base64.b64encode(("deploy:" + sys.argv[2]).encode()).decode()
class H(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Authorization") != want:
            self.send_response(401); self.send_header("WWW-Authenticate", 'Basic realm="p"'); self.end_headers(); return
        super().do_GET()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(H, directory=sys.argv[1]))
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .arg(PASSWORD)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the port");
    (child, line.trim().parse().expect("a port number"))
}

#[test]
fn a_package_behind_basic_auth_is_fetched_with_netrc_credentials_that_appear_nowhere() {
    let repo = Repo::new(&json!({ "deployableServiceSpecs": [] }), None);
    let (mut server, port) = basic_auth_server(&repo.path("services"));
    let mut airline = deployable("airline", "airline.py", "SOAP", 25600, 1);
    airline["packageUri"] = json!(format!("http://127.0.0.1:{port}/airline.py"));
    repo.write_chor(&json!({ "deployableServiceSpecs": [airline] }));

    // Without credentials: a clear failure, nothing started.
    let output = repo.enact_env(&["apply", "--auto-approve"], &[("NETRC", "/nonexistent/netrc")]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(stdout(&output).contains("401") || stderr(&output).contains("401"), "{}", describe(&output));

    // With a netrc for the host: fetched, started, and the password is nowhere.
    let netrc = repo.path("operator.netrc");
    std::fs::write(&netrc, format!("machine 127.0.0.1 login deploy password {PASSWORD}\n")).expect("netrc");
    let netrc = netrc.to_string_lossy().into_owned();
    let vars = [("NETRC", netrc.as_str()), ("AWS_SECRET_ACCESS_KEY", PASSWORD)];
    let plan = repo.enact_env(&["plan", "--json"], &vars);
    let output = repo.enact_env(&["apply", "--auto-approve"], &vars);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let state = repo.state();
    let pids = pids(&instances(&state, "airline"));
    assert_eq!(pids.len(), 1, "{state}");
    let status = repo.enact_env(&["status"], &vars);
    assert_eq!(status.status.code(), Some(0), "{}", describe(&status));
    let logs = repo.enact_env(&["logs", "airline"], &vars);
    let environ = std::fs::read(format!("/proc/{}/environ", pids[0])).expect("the instance's environment");
    let mut everything = vec![
        ("plan", describe(&plan)),
        ("apply", describe(&output)),
        ("status", describe(&status)),
        ("logs", describe(&logs)),
        ("environment", String::from_utf8_lossy(&environ).into_owned()),
    ];
    for entry in walk(&repo.path("state")) {
        if let Ok(text) = std::fs::read(&entry) {
            everything.push(("state file", format!("{}: {}", entry.display(), String::from_utf8_lossy(&text))));
        }
    }
    for (what, text) in &everything {
        assert!(!text.contains(PASSWORD), "the password shows in the {what}: {text}");
    }
    repo.enact_ok(&["destroy", "--auto-approve"], 0);
    let _ = server.kill();
    let _ = server.wait();
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
