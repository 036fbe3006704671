//! Helpers shared by the integration tests.

pub mod local;
pub mod moto;
pub mod sshd;

/// Runs the built `enact` with `args` in the config repository `root`, without colour: its exit
/// code (-1 when killed by a signal), stdout and stderr.
#[allow(dead_code, reason = "not every test uses it")]
pub fn enact_in(root: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let output = assert_cmd::Command::cargo_bin("enact")
        .expect("enact")
        .arg("-C")
        .arg(root)
        .arg("--no-color")
        .args(args)
        .output()
        .expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A service that prints 3 MB (lines `<id> <tag> line <n> xxx…`, then `<id> <tag> last <n>`)
/// when it starts and on every `GET /burst`, and answers every request with 200. With the
/// argument `--ticks` it also keeps the default SIGPIPE action and prints a tick every 20 ms.
#[allow(dead_code, reason = "not every test uses it")]
pub const CHATTY: &str = r#"#!/usr/bin/env python3
import os, signal, socket, sys, threading, time
HOST, PORT, ID = os.environ["HOST"], int(os.environ["PORT"]), os.environ["INSTANCE_ID"]
n = 0
lock = threading.Lock()
def burst(tag):
    global n
    with lock:
        size = 0
        while size < 3_000_000:
            line = f"{ID} {tag} line {n:08} {'x' * 90}\n"
            sys.stdout.write(line)
            size += len(line)
            n += 1
        sys.stdout.write(f"{ID} {tag} last {n - 1}\n")
        sys.stdout.flush()
if "--ticks" in sys.argv:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    def ticks():
        while True:
            with lock:
                sys.stdout.write(f"{ID} tick\n")
                sys.stdout.flush()
            time.sleep(0.02)
    threading.Thread(target=ticks, daemon=True).start()
burst("start")
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((HOST, PORT))
server.listen()
while True:
    conn, _ = server.accept()
    try:
        request = b""
        while b"\r\n" not in request:
            chunk = conn.recv(1024)
            if not chunk:
                break
            request += chunk
        if request.startswith(b"GET /burst"):
            burst("burst")
        elif request.startswith(b"GET /partial"):
            with lock:
                sys.stdout.write(f"{ID} partial, no newline")
                sys.stdout.flush()
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except OSError:
        pass
    finally:
        conn.close()
"#;
