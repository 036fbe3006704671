//! The ec2 provider end to end: inside a network namespace this test makes, a real EC2 API
//! emulator (moto's server) makes the nodes, a watcher adds each new instance's private address
//! to the namespace's loopback, and one real OpenSSH `sshd` answers on all of them, so `enact
//! apply` makes EC2 nodes in the emulator and really deploys and wires the travel example on
//! them over SSH. Destroy leaves no instance and no process.
//!
//! Needs root (network namespaces) and `ip`; skipped otherwise, except under `CI=true`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::moto::{self, Moto, ThrottlingProxy, command_in};
use serde_json::{Value, json};

/// A network namespace of its own, removed (with every process in it) when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn new(test: &str) -> Netns {
        let name = format!("enact-{test}-{}", std::process::id());
        if Path::new("/run/netns").join(&name).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
        let made = Command::new("ip").args(["netns", "add", &name]).status().expect("ip runs");
        assert!(made.success(), "cannot make network namespace {name}");
        let up = Command::new("ip").args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"]).status();
        assert!(up.is_ok_and(|s| s.success()), "cannot bring lo up in {name}");
        Netns { name }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // SIGTERM first, so that a login shell half-way through its start-up files leaves no
        // lock behind, then SIGKILL what is left.
        for signal in ["-TERM", "-KILL"] {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args([signal, pid]).status();
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Whether this machine can run the test: root, `ip`, sshd and the emulator.
fn available() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let ip = Path::new("/usr/sbin/ip").exists() || Path::new("/sbin/ip").exists() || Path::new("/usr/bin/ip").exists();
    if !(root && ip) {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "the ec2 end-to-end test needs root and iproute2 (ip netns) under CI"
        );
        let _ =
            writeln!(std::io::stderr(), "SKIPPED: the ec2 end-to-end test needs root and `ip` (network namespaces)");
        return false;
    }
    common::sshd::available() && moto::available()
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "enact-ec2-test", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
}

/// One sshd on port 22 of every address of the namespace, taking `client_key`.
fn sshd_in(netns: &Netns, dir: &Path, client_key: &Path) -> Child {
    fs::create_dir_all("/run/sshd").expect("/run/sshd");
    let host_key = dir.join("host_ed25519");
    keygen(&host_key);
    let public = fs::read_to_string(format!("{}.pub", client_key.display())).expect("client public key");
    fs::write(dir.join("authorized_keys"), public).expect("authorized_keys");
    let config = dir.join("sshd.conf");
    fs::write(
        &config,
        format!(
            "ListenAddress 0.0.0.0\nPort 22\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             PermitRootLogin prohibit-password\nStrictModes no\nMaxSessions 100\nMaxStartups 100:30:200\n\
             Subsystem sftp internal-sftp\n",
            host_key.display(),
            dir.join("sshd.pid").display(),
            dir.join("authorized_keys").display(),
        ),
    )
    .expect("sshd config");
    command_in(Some(&netns.name), "/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sshd starts")
}

/// Adds the private address of every instance the emulator makes to the namespace's loopback,
/// as EC2's network would route it to the instance.
fn address_watcher(moto: &Moto) -> Child {
    let script = format!(
        "import boto3, subprocess, time\n\
         c = boto3.client('ec2', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='t', aws_secret_access_key='t')\n\
         added = set()\n\
         while True:\n\
         \x20   for r in (r for p in c.get_paginator('describe_instances').paginate() for r in p['Reservations']):\n\
         \x20       for i in r['Instances']:\n\
         \x20           ip = i.get('PrivateIpAddress')\n\
         \x20           if ip and ip not in added:\n\
         \x20               subprocess.run(['ip', 'addr', 'add', ip + '/32', 'dev', 'lo'], check=False)\n\
         \x20               added.add(ip)\n\
         \x20   time.sleep(0.05)\n",
        moto.endpoint
    );
    command_in(moto.netns.as_deref(), moto::server_path().with_file_name("python"))
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the address watcher starts")
}

/// Everything a test runs against: the namespace, the emulator, the sshd, the client key.
struct Lab {
    moto: Moto,
    sshd: Child,
    watcher: Option<Child>,
    client_key: PathBuf,
    _keys: tempfile::TempDir,
    // Dropped last: it kills whatever still runs inside.
    netns: Netns,
}

impl Lab {
    fn start(test: &str) -> Lab {
        let netns = Netns::new(test);
        let keys = tempfile::tempdir().expect("tempdir");
        let client_key = keys.path().join("client_ed25519");
        keygen(&client_key);
        let moto = Moto::start_in(Some(&netns.name));
        let sshd = sshd_in(&netns, keys.path(), &client_key);
        Lab { moto, sshd, watcher: None, client_key, _keys: keys, netns }
    }

    /// Starts routing new instances' addresses to the namespace's sshd.
    fn route(&mut self) {
        if self.watcher.is_none() {
            self.watcher = Some(address_watcher(&self.moto));
        }
    }

    /// The ids of the emulator's instances that run or are on their way.
    fn live(&self) -> BTreeSet<String> {
        self.moto
            .instances()
            .into_iter()
            .filter(|(_, state, _)| state == "running" || state == "pending")
            .map(|(id, _, _)| id)
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.watcher.iter_mut().chain(std::iter::once(&mut self.sshd)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Repo {
    root: PathBuf,
    netns: String,
    _dir: tempfile::TempDir,
}

impl Repo {
    fn new(lab: &Lab, airlines: u32) -> Repo {
        Repo::with_endpoint(lab, airlines, &lab.moto.endpoint)
    }

    /// A repository whose account reaches the EC2 API at `endpoint` (the emulator, or a proxy
    /// in front of it).
    fn with_endpoint(lab: &Lab, airlines: u32, endpoint: &str) -> Repo {
        Repo::with_settings(lab, airlines, endpoint, &json!({}))
    }

    /// [`Repo::with_endpoint`] with the top-level keys of `extra` (a `reservoir`, a
    /// `nodeSelector`) set in its enact.json.
    fn with_settings(lab: &Lab, airlines: u32, endpoint: &str, extra: &Value) -> Repo {
        let (netns, client_key) = (&lab.netns, lab.client_key.as_path());
        let dir = tempfile::Builder::new().prefix("enact-ec2-").tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical");
        fs::create_dir_all(root.join("services")).expect("services dir");
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/travel/services");
        for name in ["airline.py", "travelagency.py"] {
            fs::copy(examples.join(name), root.join("services").join(name)).expect("copy service");
        }
        let mut settings = json!({
            "defaultAccount": "aws",
            "nodeSelector": { "policy": "ALWAYS_CREATE" },
            "accounts": { "aws": {
                "provider": "ec2", "region": "us-east-1", "imageId": "ami-1e749f67",
                "endpoint": endpoint, "user": "root", "privateKey": client_key.display().to_string(),
                "instanceTypes": { "SMALL": "t3.micro", "MEDIUM": "t3.small" }
            } },
            "packageTypes": { "PYTHON": { "start": "python3 {package}" } }
        });
        if let (Some(base), Some(extra)) = (settings.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        fs::write(root.join("enact.json"), serde_json::to_string_pretty(&settings).expect("json")).expect("enact.json");
        let repo = Repo { root, netns: netns.name.clone(), _dir: dir };
        repo.write_chor(airlines);
        repo
    }

    fn write_chor(&self, airlines: u32) {
        let chor = json!({
            "deployableServiceSpecs": [
                { "name": "airline", "roles": ["airline"], "packageType": "PYTHON", "packageUri": "services/airline.py",
                  "port": 8080, "numberOfInstances": airlines, "version": "1.0" },
                { "name": "travelagency", "roles": ["travelagency"], "serviceType": "REST", "packageType": "PYTHON",
                  "packageUri": "services/travelagency.py", "port": 8081, "numberOfInstances": 1, "resourceImpact": { "memory": "MEDIUM" },
                  "dependencies": [ { "serviceSpecName": "airline", "serviceSpecRole": "airline" } ] }
            ]
        });
        fs::write(self.root.join("chor.json"), serde_json::to_string_pretty(&chor).expect("json")).expect("chor.json");
    }

    /// `chor.json` with `n` airlines and no travel agency.
    fn write_airlines(&self, n: u32) {
        let chor = json!({
            "deployableServiceSpecs": [
                { "name": "airline", "roles": ["airline"], "packageType": "PYTHON", "packageUri": "services/airline.py",
                  "port": 8080, "numberOfInstances": n, "version": "1.0" }
            ]
        });
        fs::write(self.root.join("chor.json"), serde_json::to_string_pretty(&chor).expect("json")).expect("chor.json");
    }

    /// The EC2 instance ids the state records, spares included, and those of the spares.
    fn recorded(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let state = self.state();
        let nodes = state["nodes"].as_object().cloned().unwrap_or_default();
        let id = |n: &Value| n["providerId"].as_str().map(str::to_string);
        let spares = nodes.values().filter(|n| n["spare"] == json!(true)).filter_map(id).collect();
        (nodes.values().filter_map(id).collect(), spares)
    }

    /// `enact` run inside the namespace, with the emulator's credentials.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = command_in(Some(&self.netns), "env");
        command
            .args(["AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing", "AWS_EC2_METADATA_DISABLED=true"])
            .arg(assert_cmd::cargo::cargo_bin("enact"))
            .arg("-C")
            .arg(&self.root)
            .arg("--no-color")
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn enact(&self, args: &[&str]) -> (i32, String, String) {
        let output = self.command(args).output().expect("enact runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The EC2 instance ids the airline's instances run on.
    fn airline_machines(&self) -> BTreeSet<String> {
        let state = self.state();
        state["services"]["airline"]["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .filter_map(|i| state["nodes"][i["node"].as_str()?]["providerId"].as_str().map(str::to_string))
            .collect()
    }

    fn state(&self) -> Value {
        serde_json::from_str(&fs::read_to_string(self.root.join("state/dev.json")).expect("state")).expect("json")
    }

    fn pids(&self) -> Vec<u32> {
        let state = self.state();
        state["services"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
            .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
            .collect()
    }
}

/// A GET from inside the namespace; the body.
fn get_in(moto: &Moto, url: &str) -> String {
    let out = moto.python(&format!(
        "import urllib.request\nprint(urllib.request.urlopen('{url}', timeout=10).read().decode())\n"
    ));
    assert!(out.status.success(), "GET {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[test]
fn apply_makes_ec2_nodes_in_the_emulator_deploys_over_ssh_and_destroy_leaves_nothing() {
    if !available() {
        return;
    }
    let mut lab = Lab::start("ec2");
    lab.route();
    let moto = &lab.moto;
    // Every request goes through a proxy that throttles the first two and writes down each.
    let proxy = ThrottlingProxy::start(moto, 2);
    let repo = Repo::with_endpoint(&lab, 3, &proxy.endpoint);

    let (code, out, err) = repo.enact(&["apply", "--auto-approve", "--health-timeout", "30"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let retried = err.lines().filter(|l| l.contains("RequestLimitExceeded") && l.contains("trying again")).count();
    assert_eq!(retried, 2, "each throttled request is retried, and says so:\n{err}");

    // Four nodes (three SMALL airlines, one MEDIUM agency), two instance types: two calls.
    let state = repo.state();
    let nodes = state["nodes"].as_object().expect("nodes");
    assert_eq!(nodes.len(), 4, "{nodes:?}");
    assert!(
        nodes.values().all(|n| n["provider"] == "ec2" && n["providerId"].as_str().is_some_and(|i| i.starts_with("i-")))
    );
    assert_eq!(moto.reservations(), 2, "one RunInstances call per instance type");
    // The calls EC2 answered: every request after the two the proxy throttled.
    let calls = |action: &str| proxy.actions().iter().skip(2).filter(|a| *a == action).count();
    assert_eq!(calls("RunInstances"), 2, "{:?}", proxy.actions());
    let lineage = state["lineage"].as_str().expect("lineage").to_string();
    let running: Vec<_> = moto.instances().into_iter().filter(|(_, s, _)| s == "running").collect();
    assert_eq!(running.len(), 4);
    for (id, _, tags) in &running {
        assert!(tags.contains(&format!("enact:lineage={lineage}")), "{id}: {tags:?}");
        assert!(tags.contains(&"enact:env=dev".to_string()), "{id}: {tags:?}");
        assert!(tags.iter().any(|t| t.starts_with("enact:nodes=")), "{id}: {tags:?}");
    }
    let recorded: BTreeSet<&str> = nodes.values().filter_map(|n| n["providerId"].as_str()).collect();
    let made: BTreeSet<&str> = running.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(recorded, made, "state records exactly the instances EC2 runs");

    // Wired: the agency books flights from every airline, over the nodes' addresses.
    let agency =
        state["services"]["travelagency"]["instances"][0]["nativeUri"].as_str().expect("agency uri").to_string();
    let served: BTreeSet<String> = (0..6)
        .map(|_| {
            let trip: Value = serde_json::from_str(&get_in(moto, &format!("{agency}/buyTrip"))).expect("a JSON trip");
            trip["flight"]
                .as_str()
                .expect("a flight")
                .to_string()
                .trim_start_matches("flight-")
                .rsplit_once('-')
                .map(|(i, _)| i.to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(served.len(), 3, "every airline instance answers in turn: {served:?}");

    // Status looks at the instances over SSH: all healthy.
    let (code, out, err) = repo.enact(&["status"]);
    assert_eq!(code, 0, "{out}\n{err}");

    // Every node's host key was learnt on first contact.
    let known_hosts = repo.root.join("state/.known_hosts-aws");
    let learnt = |addresses: &BTreeSet<String>| {
        let text = fs::read_to_string(&known_hosts).unwrap_or_default();
        addresses.iter().filter(|a| text.lines().any(|l| l.split(' ').next() == Some(a.as_str()))).count()
    };
    let addresses = |state: &Value| -> BTreeSet<String> {
        state["nodes"]
            .as_object()
            .expect("nodes")
            .values()
            .map(|n| n["address"].as_str().expect("an address").to_string())
            .collect()
    };
    let first = addresses(&repo.state());
    assert_eq!(
        learnt(&first),
        4,
        "a key for each node's address:\n{}",
        fs::read_to_string(&known_hosts).unwrap_or_default()
    );

    // Scale in: one node goes, and its instance is terminated in the emulator.
    let pids = repo.pids();
    repo.write_chor(1);
    let (code, out, err) = repo.enact(&["apply", "--auto-approve", "--health-timeout", "30"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(repo.state()["nodes"].as_object().map(|n| n.len()), Some(2));
    let live = moto.instances().into_iter().filter(|(_, s, _)| s == "running").count();
    assert_eq!(live, 2, "the two freed nodes are terminated");
    assert_eq!(calls("TerminateInstances"), 1, "two nodes freed in one call: {:?}", proxy.actions());
    // A terminated node's key is forgotten: EC2 may give its address to a later node.
    let kept = addresses(&repo.state());
    assert_eq!((learnt(&kept), learnt(&first)), (2, 2), "only the two nodes left keep their keys");

    // Destroy: no instance runs in the emulator, no process on any node.
    let (code, out, err) = repo.enact(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| process_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pids.iter().all(|p| !process_alive(*p)), "every instance stopped");
    let left: Vec<_> = moto.instances().into_iter().filter(|(_, s, _)| s == "running" || s == "pending").collect();
    assert!(left.is_empty(), "no instance left running: {left:?}");
    assert_eq!(calls("TerminateInstances"), 2, "destroy frees its two nodes in one call: {:?}", proxy.actions());
    assert_eq!(repo.state()["nodes"], json!({}));
    assert_eq!(learnt(&first), 0, "no key of a terminated node is kept");
}

#[test]
fn an_apply_killed_right_after_run_instances_leaves_no_instance_untracked() {
    if !available() {
        return;
    }
    // No route to the new instances yet: the apply makes them, then waits for their sshd, and
    // is killed there (after RunInstances answered, before any node is recorded).
    let mut lab = Lab::start("ec2k");
    let repo = Repo::new(&lab, 2);
    let mut apply = repo
        .command(&["apply", "--auto-approve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("enact runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while lab.live().len() < 3 {
        assert!(Instant::now() < deadline, "the apply made no instance within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = apply.kill();
    let _ = apply.wait();
    let orphans = lab.live();
    assert_eq!(orphans.len(), 3, "two SMALL nodes and one MEDIUM made: {orphans:?}");
    // The journal recorded each request before its call, and every instance carries its
    // request: nothing the calls made is unaccounted for.
    let journal = fs::read_to_string(repo.root.join("state/dev.journal")).expect("the journal is left");
    let requests: BTreeSet<String> = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["op"] == "nodeCreateIntent")
        .map(|r| {
            assert_eq!(r["account"], "aws", "{r}");
            r["request"].as_str().expect("a request id").to_string()
        })
        .collect();
    assert_eq!(requests.len(), 1, "one request for the apply's nodes:\n{journal}");
    for (id, _, tags) in lab.moto.instances().into_iter().filter(|(id, _, _)| orphans.contains(id)) {
        let request = tags.iter().find_map(|t| t.strip_prefix("enact:request=")).expect("a request tag");
        assert!(requests.contains(request), "{id} carries a journaled request: {tags:?} / {requests:?}");
    }

    // Status names them; the next apply terminates them and makes its own.
    let (_, out, err) = repo.enact(&["status"]);
    let first = orphans.iter().next().expect("one");
    assert!(
        out.contains(first.as_str()) || err.contains(first.as_str()),
        "status names the untracked instances:\n{out}\n{err}"
    );
    lab.route();
    let (code, out, err) = repo.enact(&["apply", "--auto-approve", "--health-timeout", "30"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let request = requests.iter().next().expect("one");
    assert!(
        err.contains(&format!("(request {request}) and did not record the answer: EC2 had made 3")),
        "recovery names the unanswered request and what it made:\n{err}"
    );
    let live = lab.live();
    assert!(orphans.is_disjoint(&live), "the killed apply's instances are terminated: {orphans:?} / {live:?}");
    let state = repo.state();
    let recorded: BTreeSet<String> = state["nodes"]
        .as_object()
        .expect("nodes")
        .values()
        .filter_map(|n| n["providerId"].as_str().map(str::to_string))
        .collect();
    assert_eq!(recorded, live, "state records exactly the instances that run");

    let (code, out, err) = repo.enact(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(lab.live().is_empty());
}

#[test]
fn state_adopt_records_untracked_tagged_instances_as_spares_that_the_next_scale_out_takes() {
    if !available() {
        return;
    }
    let mut lab = Lab::start("ec2a");
    lab.route();
    let repo = Repo::new(&lab, 1);
    let (code, out, err) = repo.enact(&["apply", "--auto-approve", "--health-timeout", "30"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let lineage = repo.state()["lineage"].as_str().expect("a lineage").to_string();

    // Two SMALL instances carrying the environment's lineage, made behind enact's back.
    let script = format!(
        "import boto3\nc=boto3.client('ec2',endpoint_url='{}',region_name='us-east-1',aws_access_key_id='t',aws_secret_access_key='t')\n\
         r=c.run_instances(ImageId='ami-1e749f67',InstanceType='t3.micro',MinCount=2,MaxCount=2,TagSpecifications=[{{'ResourceType':'instance','Tags':[\
         {{'Key':'enact:lineage','Value':'{lineage}'}},{{'Key':'enact:env','Value':'dev'}},{{'Key':'enact:account','Value':'aws'}}]}}])\n\
         print(' '.join(i['InstanceId'] for i in r['Instances']))\n",
        lab.moto.endpoint
    );
    let made = lab.moto.python(&script);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let outside: BTreeSet<String> =
        String::from_utf8_lossy(&made.stdout).split_whitespace().map(str::to_string).collect();
    assert_eq!(outside.len(), 2);

    // plan and status name them, and say how to keep them.
    let (_, out, err) = repo.enact(&["plan"]);
    assert!(
        outside.iter().all(|id| out.contains(id.as_str()))
            && out.contains("terminates 2 EC2 instance(s)")
            && out.contains("`enact state adopt` records the machines")
            && out.contains(", 2 untracked to stop."),
        "plan names both, counts them and says the way to adopt them:\n{out}\n{err}"
    );
    // Its machine form lists them one by one.
    let (_, out, err) = repo.enact(&["plan", "--json"]);
    let plan: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let listed: BTreeSet<String> = plan["untracked"]["found"]["ec2Instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["providerId"].as_str().map(str::to_string))
        .collect();
    assert_eq!(listed, outside, "{plan}");
    let (code, _, _) = repo.enact(&["status"]);
    assert_eq!(code, 1, "status fails while untracked instances run");

    // Without a terminal or --yes nothing is recorded.
    let serial = repo.state()["serial"].clone();
    let (code, _, err) = repo.enact(&["state", "adopt"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(repo.state()["serial"], serial, "nothing changed");

    let (code, out, err) = repo.enact(&["state", "adopt", "--yes"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Adopted 2 machine(s) into env `dev` as spare nodes"), "{out}");
    let (recorded, spares) = repo.recorded();
    assert_eq!(recorded.len(), 4, "{recorded:?}");
    assert_eq!(spares, outside, "the adopted instances are the spares");
    let state = repo.state();
    for node in state["nodes"].as_object().expect("nodes").values().filter(|n| n["spare"] == true) {
        assert_eq!((node["size"].as_str(), node["memory"].as_str()), (Some("t3.micro"), Some("SMALL")), "{node}");
    }
    let (code, out, err) = repo.enact(&["status"]);
    assert_eq!(code, 0, "nothing is untracked any more:\n{out}\n{err}");
    let (code, out, _) = repo.enact(&["state", "adopt", "--yes"]);
    assert_eq!(code, 0);
    assert!(out.contains("Nothing to adopt"), "{out}");

    // Two more airlines run on the adopted machines: EC2 is asked for no node.
    let reservations = lab.moto.reservations();
    repo.write_chor(3);
    let (code, out, err) = repo.enact(&["apply", "--auto-approve", "--health-timeout", "30"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(lab.moto.reservations(), reservations, "no RunInstances call");
    let on = repo.airline_machines();
    assert!(outside.is_subset(&on), "the adopted {outside:?} run airlines: {on:?}");
    assert_eq!(repo.pids().len(), 4, "three airlines and the agency run");

    let (code, out, err) = repo.enact(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(lab.live().is_empty(), "destroy terminates the adopted machines too");
}

#[test]
fn the_reservoir_keeps_spare_ec2_nodes_that_a_scale_out_takes_and_destroy_terminates() {
    if !available() {
        return;
    }
    let mut lab = Lab::start("ec2r");
    lab.route();
    let endpoint = lab.moto.endpoint.clone();
    let repo = Repo::with_settings(&lab, 1, &endpoint, &json!({ "reservoir": { "initialSize": 2, "threshold": 0 } }));
    let (code, out, err) = repo.enact(&["apply", "--auto-approve", "--health-timeout", "30"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("+2 spare"), "the plan names the spares:\n{out}");
    // A node per instance and two spares: EC2 runs exactly the nodes the state records.
    let (recorded, spares) = repo.recorded();
    assert_eq!((recorded.len(), spares.len()), (4, 2), "{recorded:?} / {spares:?}");
    assert_eq!(lab.live(), recorded, "EC2 runs exactly the recorded nodes, spares included");
    let (code, out, err) = repo.enact(&["status"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("reservoir of account `aws`: 2 spare nodes"), "{out}");

    // Two more airlines run on the two spares (no node made for them), and the emptied
    // reservoir is refilled with two new spares.
    repo.write_chor(3);
    let (code, out, err) = repo.enact(&["apply", "--auto-approve", "--health-timeout", "30"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let on = repo.airline_machines();
    assert!(spares.is_subset(&on), "the former spares {spares:?} run airlines: {on:?}");
    let pids = repo.pids();
    assert_eq!(pids.len(), 4, "three airlines and the agency run");
    let (recorded, new_spares) = repo.recorded();
    assert_eq!((recorded.len(), new_spares.len()), (6, 2));
    assert!(new_spares.is_disjoint(&spares));
    assert_eq!(lab.live(), recorded, "EC2 runs exactly the recorded nodes, spares included");

    // Destroy terminates every node, spares included.
    let (code, out, err) = repo.enact(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(lab.live().is_empty(), "no instance left running: {:?}", lab.live());
    assert_eq!(repo.state()["nodes"], json!({}));
}

#[test]
fn limited_round_robin_never_runs_more_ec2_nodes_than_its_vm_limit_spares_included() {
    if !available() {
        return;
    }
    let mut lab = Lab::start("ec2l");
    lab.route();
    let proxy = ThrottlingProxy::start(&lab.moto, 0);
    let extra = json!({
        "nodeSelector": { "policy": "LIMITED_ROUND_ROBIN", "vmLimit": 2 },
        "reservoir": { "initialSize": 2 }
    });
    let repo = Repo::with_settings(&lab, 1, &proxy.endpoint, &extra);
    repo.write_airlines(1);
    // Every instance EC2 ever made stays listed (terminated ones included): counting them all
    // shows there were never more than two at once.
    let made = || lab.moto.instances().len();

    // One airline: its node and one spare, not two.
    let (code, out, err) = repo.enact(&["apply", "--auto-approve", "--health-timeout", "30"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("keeps 1 spare node, not 2"), "{out}");
    assert_eq!(made(), 2);
    assert_eq!(repo.recorded().1.len(), 1);

    // A second airline takes the spare: no new node, no new spare.
    repo.write_airlines(2);
    let (code, out, err) = repo.enact(&["apply", "--auto-approve", "--health-timeout", "30"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(made(), 2, "the spare took the instance");
    assert_eq!(repo.pids().len(), 2);

    // A third airline would need a third node: refused before anything runs.
    repo.write_airlines(3);
    let (code, out, err) = repo.enact(&["apply", "--auto-approve", "--health-timeout", "30"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("`vmLimit` 2 is reached"), "{err}");
    assert_eq!(made(), 2);
    assert_eq!(lab.live(), repo.recorded().0);

    // Back to one: the emptied node is terminated before the new spare is made.
    repo.write_airlines(1);
    let (code, out, err) = repo.enact(&["apply", "--auto-approve", "--health-timeout", "30"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (recorded, spares) = repo.recorded();
    assert_eq!((recorded.len(), spares.len()), (2, 1));
    assert_eq!(lab.live(), recorded);
    let actions = proxy.actions();
    let last = |action: &str| actions.iter().rposition(|a| a == action);
    assert!(last("TerminateInstances") < last("RunInstances"), "{actions:?}");

    let (code, out, err) = repo.enact(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(lab.live().is_empty());
}
