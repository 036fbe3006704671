//! The shell text enact sends to ssh hosts: quoting ([`quote`]), the scripts that start, stop,
//! look at, find and read the logs of instances, the log rotation that keeps every log under
//! its cap, and the reading of what those scripts print. Every script uses POSIX sh and, where
//! it runs often, builtins only. Pure text: nothing here talks to a host.
//!
//! Depends on the repository settings (a log's cap) and the provider's [`Tagged`].

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use crate::provider::Tagged;
use crate::repo::settings::LogCap;

/// How long a stop waits for the process to go after SIGKILL, in tenths of a second.
const KILL_WAIT_TENTHS: u32 = 20;

/// Quotes a value for a POSIX shell: `'…'`, with every `'` written as `'\''`. Nothing inside
/// single quotes is interpreted, so `;`, `$(…)`, backticks, quotes and newlines stay text.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Seconds between two looks of an instance's log watcher at the size of its log.
pub const WATCH_EVERY_SECS: u32 = 5;

/// `rot FILE MAX KEEP`, a shell function: when FILE holds more than MAX bytes, FILE.1 … move up
/// one (the one past KEEP is dropped), FILE's newest MAX bytes become FILE.1 and FILE is emptied
/// in place (copy and truncate: the instance keeps appending to it). Output the instance writes
/// between the copy and the truncation is lost, and so is what it wrote beyond the newest MAX
/// bytes since the last look. `FILE.1.at` says where FILE.1 began in FILE (`<offset> <cksum of
/// FILE's first 64 bytes>`), so that a follower that read FILE up to some offset reads on from
/// there in FILE.1 ([`follow_script`]) rather than again from FILE.1's start.
const ROTATE_FN: &str = r#"rot() { [ -f "$1" ] || return 0; rs=$(($(wc -c < "$1"))); [ "$rs" -gt "$2" ] || return 0; ri=$3; while [ "$ri" -gt 1 ]; do rj=$((ri-1)); [ -f "$1.$rj" ] && mv -f "$1.$rj" "$1.$ri"; ri=$rj; done; if [ "$3" -gt 0 ]; then rc=$((rs - $2)); tail -c +$((rc + 1)) "$1" | head -c "$2" > "$1.1.trim" && printf '%s %s\n' "$rc" "$(head -c 64 "$1" | cksum | cut -d' ' -f1)" > "$1.1.at" && mv -f "$1.1.trim" "$1.1"; fi; : > "$1"; }"#;

/// A shell snippet that rotates the logs of `instances` (ids) on a host, in every environment,
/// each under the cap recorded beside it at start (`<log>.cap`: max bytes and rotated files
/// kept); logs without one (started by an older enact) are left alone. One `wc` sizes them all;
/// only a log over its cap costs more.
fn rotate_on_contact(instances: &[&str]) -> String {
    let mut script = format!("{ROTATE_FN}; set --; for f in");
    for id in instances {
        // Both layouts: `<env>/logs/<lineage>/` and, from before lineages, `<env>/logs/`.
        let name = quote(&format!("{id}.log"));
        let _ = write!(script, " \"$HOME\"/.enact/*/logs/*/{name} \"$HOME\"/.enact/*/logs/{name}");
    }
    script.push_str(
        r#"; do [ -f "$f" ] && [ -f "$f.cap" ] && set -- "$@" "$f"; done; [ $# -eq 0 ] || wc -c "$@" 2>/dev/null | while read n f; do read m k < "$f.cap" 2>/dev/null || continue; case "$n$m$k" in ''|*[!0-9]*) continue;; esac; [ "$n" -gt "$m" ] && rot "$f" "$m" "$k"; done; true"#,
    );
    script
}

/// The log watcher, run with `enact-logs PID LOG MAX KEEP EVERY`: rotates LOG every EVERY
/// seconds while PID (the instance) runs, the first time EVERY seconds after the start (the log
/// is empty before; a start costs no `wc`). It is started from the instance's own process, so it
/// is in the instance's process group (a stop ends it) and has a clean environment (no token).
const WATCH: &str = r#"p=$1 f=$2 max=$3 keep=$4 every=$5; while :; do sleep "$every"; kill -0 "$p" 2>/dev/null || exit 0; rot "$f" "$max" "$keep"; done"#;

/// What runs as the instance, with `enact-instance WATCH LOG MAX KEEP EVERY ARGV…`: it starts the
/// log watcher and then becomes the instance (exec), so the instance keeps its pid.
const WRAP: &str = r#"w=$1 f=$2 max=$3 keep=$4 every=$5; shift 5; env -i PATH="$PATH" sh -c "$w" enact-logs "$$" "$f" "$max" "$keep" "$every" < /dev/null > /dev/null 2>&1 & exec "$@""#;

/// A shell snippet that is true while `pid` is the process that started at `start`.
/// Shell builtins only (no process is started): it is run often, on hosts that may be busy.
pub(super) fn alive_check(pid: u32, start: Option<u64>) -> String {
    let start = start.map_or_else(String::new, |s| s.to_string());
    format!(
        "p={pid}; s={q}; alive() {{ [ -r /proc/$p/stat ] || return 1; {STAT} || return 1; \
         [ \"$1\" != Z ] || return 1; [ -z \"$s\" ] || [ \"${{20}}\" = \"$s\" ]; }}",
        q = quote(&start)
    )
}

/// Sets `$1 $2 …` to the fields of `/proc/$p/stat` after the command name (`$1` the state,
/// `$4` the session, `$20` the start time), with shell builtins; false when `$p` is gone.
const STAT: &str = "{ read -r t 2>/dev/null </proc/$p/stat && t=${t##*') '} && set -- $t; }";

/// The port of an instance's `http://host:port/…` URI.
pub(super) fn port_of_uri(uri: &str) -> Option<u16> {
    let rest = uri.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    if host.is_empty() || host.ends_with(':') {
        return None;
    }
    port.parse().ok()
}

/// Where an instance's log is on a host: `<base>/logs/<lineage>/<instance>.log`, `base` being
/// `$HOME/.enact/<env>`. Keyed by the state's lineage, so that two repositories with an
/// environment of the same name sharing the host keep their logs apart.
pub(super) fn remote_log(base: &str, lineage: &str, instance: &str) -> String {
    format!("{base}/logs/{lineage}/{instance}.log")
}

/// The files an instance's log may be on a host, in the order to look: [`remote_log`], then
/// where an enact from before lineage-keyed logs put it (`<base>/logs/<instance>.log`).
pub(super) fn log_files(base: &str, lineage: &str, instance: &str) -> [String; 2] {
    [remote_log(base, lineage, instance), format!("{base}/logs/{instance}.log")]
}

/// The script that starts an instance on a host, detached, and prints `<pid> <start time>`.
/// `log` is the instance's log there ([`remote_log`]), `dir` the directory it starts in (its
/// package's), `env` its variables as `NAME='value'` words and `argv` its command as quoted
/// words; its log is kept under `cap`.
///
/// The instance appends to its log itself (it is never held up by a reader); its watcher keeps
/// the log under the cap while enact is away, and every contact (status, plan, apply, logs)
/// rotates it too, under the cap recorded beside it. Builtins where they do (the log directory
/// is made once; the variables are assignments the shell exports to `setsid`): a start forks as
/// little as it can.
pub(super) fn start_script(log: &str, dir: &str, env: &[String], argv: &[String], cap: LogCap) -> String {
    let (max, keep) = (cap.max_bytes.to_string(), cap.keep.to_string());
    format!(
        "{{ [ -d {logdir} ] || mkdir -p {logdir}; }} && printf '%s %s\\n' {max} {keep} > {cap} && cd {dir} && \
         {{ {env} setsid sh -c {wrap} enact-instance {watch} {log} {max} {keep} {every} {argv} >> {log} 2>&1 < /dev/null & }}; \
         p=$!; {STAT}; echo \"$p ${{20}}\"",
        logdir = quote(log.rsplit_once('/').map_or(".", |(dir, _)| dir)),
        cap = quote(&format!("{log}.cap")),
        dir = quote(dir),
        env = env.join(" "),
        wrap = quote(WRAP),
        watch = quote(&format!("{ROTATE_FN}; {WATCH}")),
        max = quote(&max),
        keep = quote(&keep),
        every = quote(&WATCH_EVERY_SECS.to_string()),
        argv = argv.join(" "),
        log = quote(log),
    )
}

/// The script that sends SIGTERM to the process `check` ([`alive_check`]) names, to its
/// session's process group (it leads one), else to it alone; prints `gone` when it was gone
/// already, `sent` otherwise.
pub(super) fn term_script(check: &str) -> String {
    format!(
        "{check}; alive || {{ echo gone; exit 0; }}; kill -TERM -$p 2>/dev/null || kill -TERM $p 2>/dev/null; echo sent"
    )
}

/// The script that sends SIGKILL the same way and waits (up to [`KILL_WAIT_TENTHS`] tenths of
/// a second) for the process to go; exit status 1 when it outlived that.
pub(super) fn kill_script(check: &str) -> String {
    format!(
        "{check}; alive || exit 0; kill -KILL -$p 2>/dev/null || kill -KILL $p 2>/dev/null; i=0; \
         while alive && [ $i -lt {KILL_WAIT_TENTHS} ]; do sleep 0.1; i=$((i+1)); done; alive && exit 1; exit 0"
    )
}

/// The script that looks at instances of one host in one command, each given by its pid and
/// start time (`None` for an instance with no pid): `<index> ok` or `<index> gone` per
/// instance, in order. Every capped log of those instances on the host is rotated first (a
/// contact with the host).
pub(super) fn observe_script(instances: &[(&str, Option<u32>, Option<u64>)]) -> String {
    let ids: Vec<&str> = instances.iter().map(|(id, _, _)| *id).collect();
    let mut script = format!("{{ {}; }} 2>/dev/null; true", rotate_on_contact(&ids));
    for (index, (_, pid, start_time)) in instances.iter().enumerate() {
        if let Some(pid) = pid {
            let _ = write!(
                script,
                "; {}; if alive; then echo '{index} ok'; else echo '{index} gone'; fi",
                alive_check(*pid, *start_time)
            );
        } else {
            let _ = write!(script, "; echo '{index} ok'");
        }
    }
    script
}

/// The script that prints the last `lines` lines of instance `id`'s output from the first of
/// `files` ([`log_files`]) that exists: the log rotated first (a contact), then as many of LOG,
/// LOG.1, … as hold `lines` lines, oldest first, through one `tail`.
pub(super) fn logs_script(files: &[String], id: &str, lines: usize) -> String {
    let files: Vec<String> = files.iter().map(|f| quote(f)).collect();
    format!(
        "{{ {rotate}; }} 2>/dev/null; for f in {files}; do [ -f \"$f\" ] || continue; \
         set --; g=$f; i=0; need={lines}; \
         while [ -f \"$g\" ] && [ \"$need\" -gt 0 ]; do set -- \"$g\" \"$@\"; need=$((need - $(wc -l < \"$g\"))); i=$((i+1)); g=\"$f.$i\"; done; \
         [ $# -gt 0 ] && cat \"$@\" | tail -n {lines}; break; done; true",
        files = files.join(" "),
        rotate = rotate_on_contact(&[id]),
    )
}

/// The script behind [`super::super::Provider::log_since`] on a host: from the first of `files`
/// ([`log_files`]) that exists, a first line `<inode> <size> <head>` (the new mark; `head` is
/// the `cksum` of the first 64 bytes at most), then what the log gained since `since`, or with
/// `None` its last `lines` lines up to that size (from `LOG.1` too when the log has fewer). A
/// log rotated since the mark (copied to `LOG.1` and cut short, as the host's watcher does, so
/// shorter than the mark or with other first bytes) is read on from the mark in `LOG.1`; when
/// `LOG.1` is not that copy, [`crate::provider::logfile::LOST`] says output was lost and
/// `LOG.1` follows whole. Exit 3 when there is no log. POSIX `sh` with `stat -c`, `head -c`
/// and `tail -c`, as GNU coreutils and BusyBox have them.
pub(super) fn follow_script(files: &[String], since: Option<crate::provider::LogMark>, lines: usize) -> String {
    let files: Vec<String> = files.iter().map(|f| quote(f)).collect();
    let head = format!(
        "for f in {files}; do [ -f \"$f\" ] && break; done; [ -f \"$f\" ] || exit 3; \
         hs() {{ head -c \"$2\" \"$1\" | cksum | cut -d' ' -f1; }}; sz() {{ wc -c < \"$1\" | tr -d ' '; }}; \
         m=$(stat -c '%i %s' \"$f\") || exit 4; set -- $m; len=$2; h=$len; [ \"$h\" -gt 64 ] && h=64; \
         printf '%s %s %s\\n' \"$1\" \"$len\" \"$(hs \"$f\" $h)\"; ",
        files = files.join(" ")
    );
    let body = match since {
        None => format!(
            "n=$(head -c \"$len\" \"$f\" | wc -l); if [ \"$n\" -lt {lines} ] && [ -f \"$f.1\" ]; then \
             tail -n $(({lines} - n)) \"$f.1\"; fi; head -c \"$len\" \"$f\" | tail -n {lines}; true"
        ),
        Some(mark) => format!(
            "off={offset}; n=$off; [ \"$n\" -gt 64 ] && n=64; \
             if [ \"$len\" -lt \"$off\" ] || [ \"$(hs \"$f\" $n)\" != {head} ]; then \
             if [ -f \"$f.1\" ] && [ \"$(sz \"$f.1\")\" -ge \"$off\" ] && [ \"$(hs \"$f.1\" $n)\" = {head} ]; then \
             o=$(sz \"$f.1\"); tail -c +$((off + 1)) \"$f.1\" | head -c $((o - off)); \
             elif [ \"$n\" -eq 64 ] && [ -f \"$f.1\" ] && [ -f \"$f.1.at\" ] && {{ read rc rh < \"$f.1.at\"; }} \
             && [ \"$rh\" = {head} ] && [ \"$off\" -ge \"$rc\" ]; then tail -c +$((off - rc + 1)) \"$f.1\"; \
             else printf '%s' {lost}; [ -f \"$f.1\" ] && cat \"$f.1\"; fi; off=0; fi; \
             [ \"$len\" -gt \"$off\" ] && tail -c +$((off + 1)) \"$f\" | head -c $((len - off)); true",
            offset = mark.offset,
            head = mark.head,
            lost = quote(crate::provider::logfile::LOST),
        ),
    };
    head + &body
}

/// The mark and the text [`follow_script`] printed; `None` when its first line is not a mark.
pub(super) fn parse_follow(out: &str) -> Option<(crate::provider::LogMark, &str)> {
    let (first, text) = out.split_once('\n')?;
    let mut fields = first.split(' ');
    let mark = crate::provider::LogMark {
        file: fields.next()?.parse().ok()?,
        offset: fields.next()?.parse().ok()?,
        head: fields.next()?.parse().ok()?,
    };
    Some((mark, text))
}

/// The script that lists the processes carrying `ENACT_LINEAGE=<lineage>`: `P <pid> <start
/// time>` per session leader, then `/proc/<pid>/environ:NAME=value` for the variables that say
/// what it is (read by [`parse_tagged`]). GNU grep reads the NUL-separated environ files itself
/// (three processes in all, however many match); others go through `tr`.
pub(super) fn tagged_script(lineage: &str) -> String {
    format!(
        "n={n}; r='^(INSTANCE_ID|SERVICE_NAME|HOST|ENACT_ACCOUNT)='; \
         if printf 'a\\0' | grep -qzxF a 2>/dev/null; then z=1; l=$(grep -lzxF \"$n\" /proc/[0-9]*/environ 2>/dev/null); \
         else z=; l=$(for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$f\" 2>/dev/null | grep -qxF \"$n\" && echo \"$f\"; done); fi; \
         k=; for f in $l; do p=${{f#/proc/}}; p=${{p%/environ}}; {STAT} || continue; \
         [ \"$1\" != Z ] && [ \"$4\" = \"$p\" ] || continue; echo \"P $p ${{20}}\"; k=\"$k $f\"; done; \
         [ -n \"$k\" ] || exit 0; \
         if [ -n \"$z\" ]; then grep -HazE \"$r\" $k 2>/dev/null | tr '\\0' '\\n'; \
         else for f in $k; do tr '\\0' '\\n' < \"$f\" 2>/dev/null | grep -E \"$r\" | sed \"s|^|$f:|\"; done; fi; true",
        n = quote(&format!("ENACT_LINEAGE={lineage}"))
    )
}

/// The script that prints `<pid> <start time>` of the first process carrying
/// `ENACT_TOKEN=<token>` (an instance whose start was interrupted), nothing when there is none.
pub(super) fn find_script(token: &str) -> String {
    format!(
        "n={n}; if printf 'a\\0' | grep -qzxF a 2>/dev/null; then l=$(grep -lzxF \"$n\" /proc/[0-9]*/environ 2>/dev/null); \
         else l=$(for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$f\" 2>/dev/null | grep -qxF \"$n\" && echo \"$f\"; done); fi; \
         for f in $l; do p=${{f#/proc/}}; p=${{p%/environ}}; {STAT} || continue; echo \"$p ${{20}}\"; break; done",
        n = quote(&format!("ENACT_TOKEN={token}"))
    )
}

/// Reads what the `tagged` script prints: `P <pid> <start time>` per process, in order, and
/// `/proc/<pid>/environ:NAME=value` lines (the first of each name counts).
pub(super) fn parse_tagged(out: &str) -> Vec<Tagged> {
    let mut found: Vec<Tagged> = Vec::new();
    let mut seen: HashMap<u32, HashSet<String>> = HashMap::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("P ") {
            let mut fields = rest.split_whitespace();
            let Some(pid) = fields.next().and_then(|p| p.parse().ok()) else { continue };
            let start_time = fields.next().and_then(|s| s.parse().ok());
            found.push(Tagged {
                pid,
                start_time,
                instance: String::new(),
                service: String::new(),
                host: String::new(),
                account: String::new(),
            });
        } else if let Some(rest) = line.strip_prefix("/proc/")
            && let Some((pid, rest)) = rest.split_once("/environ:")
            && let Ok(pid) = pid.parse::<u32>()
            && let Some((name, value)) = rest.split_once('=')
            && seen.entry(pid).or_default().insert(name.to_string())
            && let Some(process) = found.iter_mut().find(|t| t.pid == pid)
        {
            let field = match name {
                "INSTANCE_ID" => &mut process.instance,
                "SERVICE_NAME" => &mut process.service,
                "HOST" => &mut process.host,
                "ENACT_ACCOUNT" => &mut process.account,
                _ => continue,
            };
            *field = value.to_string();
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any text without NUL (which no argument can hold), hostile shell syntax most of all,
        /// comes back from `sh -c 'printf %s QUOTED'` unchanged: it was never run.
        #[test]
        fn any_value_quoted_reaches_a_shell_as_text(
            value in proptest::string::string_regex("([^\\x00]|[;&|$`'\"\\\\(){}<>*?!#~\\n])*").expect("regex")
        ) {
            let out = std::process::Command::new("sh").arg("-c").arg(format!("printf %s {}", quote(&value))).output().expect("sh");
            proptest::prop_assert_eq!(String::from_utf8_lossy(&out.stdout), value.as_str());
            proptest::prop_assert!(out.status.success());
        }
    }

    #[test]
    fn quoting_keeps_hostile_values_as_text() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        for hostile in ["a; rm -rf /", "$(touch /tmp/x)", "`id`", "\"q\"", "line\nbreak", "'; echo pwned; '"] {
            let quoted = quote(hostile);
            let out = std::process::Command::new("sh").arg("-c").arg(format!("printf %s {quoted}")).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), hostile, "{quoted}");
        }
    }

    #[test]
    fn the_alive_check_knows_a_process_by_pid_and_start_time_with_builtins_only() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let start: u64 = stat.rsplit_once(") ").unwrap().1.split(' ').nth(19).unwrap().parse().unwrap();
        // POSIX sh, and bash where it is there: the account's shell may be either.
        for shell in
            ["sh", "bash"].into_iter().filter(|s| std::process::Command::new(s).arg("-c").arg("true").status().is_ok())
        {
            let run = |script: String| {
                let out = std::process::Command::new(shell).arg("-c").arg(script).output().unwrap();
                (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
            };
            assert_eq!(run(format!("{}; alive", alive_check(pid, Some(start)))), (Some(0), String::new()), "{shell}");
            assert_eq!(run(format!("{}; alive", alive_check(pid, None))), (Some(0), String::new()), "{shell}");
            // Another process with that pid (another start time) is not it.
            assert_eq!(run(format!("{}; alive", alive_check(pid, Some(start + 1)))).0, Some(1), "{shell}");
            // The fields after the command name, as the start and tagged scripts read them.
            let fields = run(format!("p={pid}; {STAT} && echo \"$1 $4 ${{20}}\" >&2"));
            assert_eq!(fields.1.split(' ').nth(2).map(str::trim), Some(start.to_string().as_str()), "{shell}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let (code, err) = {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{}; alive", alive_check(pid, Some(start))))
                .output()
                .unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
        };
        assert_eq!((code, err.as_str()), (Some(1), ""), "a process that is gone is not alive, quietly");
    }

    #[test]
    fn the_logs_script_reads_this_lineage_s_log_else_one_of_before_lineages_never_another_s() {
        let home = tempfile::tempdir().unwrap();
        let base = home.path().join(".enact/dev");
        let base = base.to_str().unwrap();
        let write = |path: &str, text: &str| {
            let path = std::path::Path::new(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        let run = |lineage: &str| {
            let script = logs_script(&log_files(base, lineage, "a-1"), "a-1", 2);
            let out = std::process::Command::new("sh").arg("-c").arg(script).env("HOME", home.path()).output().unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        // Another repository's environment of the same name, on the same host.
        write(&remote_log(base, "other", "a-1"), "theirs 1\ntheirs 2\n");
        assert_eq!(run("ours"), "");
        // A log an enact from before lineages wrote is read while there is no other.
        write(&format!("{base}/logs/a-1.log"), "old 1\nold 2\nold 3\n");
        assert_eq!(run("ours"), "old 2\nold 3\n");
        // Ours, read on into its rotated file; the others are not.
        write(&remote_log(base, "ours", "a-1"), "ours 3\n");
        write(&format!("{}.1", remote_log(base, "ours", "a-1")), "ours 1\nours 2\n");
        assert_eq!(run("ours"), "ours 2\nours 3\n");
        assert_eq!(run("other"), "theirs 1\ntheirs 2\n");
    }

    #[test]
    fn the_follow_script_reads_on_from_its_mark_across_a_copy_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x-1.log");
        let files = [log.to_string_lossy().into_owned()];
        let run = |since: Option<crate::provider::LogMark>, lines: usize| {
            let out =
                std::process::Command::new("sh").arg("-c").arg(follow_script(&files, since, lines)).output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
            let out = String::from_utf8(out.stdout).unwrap();
            let (mark, text) = parse_follow(&out).unwrap_or_else(|| panic!("{out}"));
            (text.to_string(), mark)
        };
        let append = |text: &str| {
            use std::io::Write as _;
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&log)
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        };
        append("one\ntwo\nthree\n");
        let (text, mark) = run(None, 2);
        assert_eq!(text, "two\nthree\n");
        assert_eq!(mark.offset, 14);
        // Appended: only what is new, a line cut in the middle included.
        append("four\nfi");
        let (text, mark) = run(Some(mark), 2);
        assert_eq!(text, "four\nfi");
        // Copied and cut short, as the watcher rotates, then written on: the rest of the copy,
        // then the new file.
        append("ve\nsix\n");
        std::fs::copy(&log, dir.path().join("x-1.log.1")).unwrap();
        std::fs::write(&log, "seven\n").unwrap();
        let (text, mark) = run(Some(mark), 2);
        assert_eq!(text, "ve\nsix\nseven\n");
        // Nothing new: nothing.
        let (text, same) = run(Some(mark), 2);
        assert_eq!((text.as_str(), same), ("", mark));
        // Rotated twice before a look: the copy is not the file read, so the loss is said.
        std::fs::write(dir.path().join("x-1.log.1"), "eight\n").unwrap();
        std::fs::write(&log, "nine\n").unwrap();
        let (text, _) = run(Some(mark), 2);
        assert_eq!(text, format!("{}eight\nnine\n", crate::provider::logfile::LOST));
        // No log: exit 3.
        let none = [dir.path().join("none.log").to_string_lossy().into_owned()];
        let out = std::process::Command::new("sh").arg("-c").arg(follow_script(&none, None, 2)).output().unwrap();
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn the_port_is_read_from_an_instance_uri() {
        assert_eq!(port_of_uri("http://127.0.0.2:8080/air/"), Some(8080));
        assert_eq!(port_of_uri("http://[::1]:81/x"), Some(81));
        assert_eq!(port_of_uri("http://host/x"), None);
        assert_eq!(port_of_uri(""), None);
        assert_eq!(port_of_uri("http://::1/x"), None);
    }

    #[test]
    fn tagged_processes_are_read_with_their_variables() {
        let out = "P 42 1000\nP 43 1001\n/proc/42/environ:INSTANCE_ID=web-1\n/proc/42/environ:SERVICE_NAME=web\n\
                   /proc/42/environ:HOST=10.0.0.5\n/proc/42/environ:HOST=spoofed\n/proc/43/environ:ENACT_ACCOUNT=lab\n\
                   /proc/44/environ:HOST=not-a-leader\nnoise\n";
        let found = parse_tagged(out);
        assert_eq!(found.len(), 2);
        assert_eq!(
            (
                found[0].pid,
                found[0].start_time,
                found[0].instance.as_str(),
                found[0].service.as_str(),
                found[0].host.as_str()
            ),
            (42, Some(1000), "web-1", "web", "10.0.0.5")
        );
        assert_eq!((found[1].pid, found[1].account.as_str(), found[1].instance.as_str()), (43, "lab", ""));
    }

    /// `follow_script` on this machine's `sh`: the mark after `text` was read, then `unread`
    /// written, the log rotated as the host's watcher does (`rot LOG MAX 2`) and `more`
    /// written: what the next look prints.
    fn follow_across_rotation(text: &str, unread: &str, max: usize, more: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("i.log").display().to_string();
        let sh = |script: &str| {
            let out = std::process::Command::new("sh").arg("-c").arg(script).output().expect("sh");
            assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).expect("UTF-8")
        };
        std::fs::write(&log, text).expect("write the log");
        let files = [log.clone()];
        let first = sh(&follow_script(&files, None, 1));
        let (mark, _) = parse_follow(&first).expect("a mark");
        let (mark, read) = match parse_follow(&sh(&follow_script(&files, Some(mark), 1))) {
            Some((m, t)) => (m, t.to_string()),
            None => panic!("a mark"),
        };
        assert_eq!(read, "", "nothing new before the rotation");
        let append = |text: &str| {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
                .expect("append");
        };
        append(unread);
        sh(&format!("{ROTATE_FN}; rot {} {max} 2", quote(&log)));
        append(more);
        let out = sh(&follow_script(&files, Some(mark), 1));
        parse_follow(&out).expect("a mark").1.to_string()
    }

    #[test]
    fn a_follower_that_read_everything_sees_only_what_comes_after_a_capped_rotation() {
        let lines: String = (0..5000).map(|i| format!("line {i:06} {}\n", "x".repeat(40))).collect();
        // Rotated whole (under the cap) and cut to its newest 4 KiB (over it): either way the
        // follower, which had read it all, is shown only the new line, once.
        for max in [1 << 20, 4096] {
            let next = follow_across_rotation(&lines, "", max, "after\n");
            assert_eq!(next, "after\n", "max {max}: {} bytes again", next.len());
        }
        // What it had not read yet and the rotation kept comes first, once.
        let next = follow_across_rotation(&lines, "unread\n", 4096, "after\n");
        assert_eq!(next, "unread\nafter\n");
        // More unread than the cap keeps: said lost, then what was kept, then what came.
        let unread: String = (0..200).map(|i| format!("late {i:03} {}\n", "y".repeat(40))).collect();
        let next = follow_across_rotation(&lines, &unread, 4096, "after\n");
        assert!(next.starts_with(crate::provider::logfile::LOST), "{next}");
        assert!(next.ends_with("late 199 yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\nafter\n"), "{next}");
        assert!(!next.contains("line "), "nothing read before comes again: {next}");
    }
}
