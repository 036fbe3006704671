//! Tests of the stores: serial and lineage, backups written, read, pruned and damaged.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::backups::{Prepared, Ready};
use super::read::{BackupError, BackupReader, ReferenceError};
use super::write::write_synced;
use super::*;
use crate::state::backup::{self, Damage};

#[test]
fn the_serial_of_a_damaged_state_is_read_from_what_is_left_of_it() {
    assert_eq!(serial_in("{\"formatVersion\": 1, \"lineage\": \"x\", \"serial\": 17, \"env\": "), Some(17));
    assert_eq!(serial_in("{ \"serial\" :3}"), Some(3));
    assert_eq!(serial_in("{ \"formatVersion\": 1"), None);
}

fn exercise(store: &dyn StateStore) {
    assert_eq!(store.read("dev").unwrap(), None);
    let first = store.write(&State::empty("dev")).unwrap();
    assert_eq!(first.serial, 1);
    assert_eq!(first.lineage.len(), 36);
    let second = store.write(&first).unwrap();
    assert_eq!((second.serial, &second.lineage), (2, &first.lineage));
    // Writing from a stale serial is refused and changes nothing.
    let err = store.write(&first).unwrap_err().to_string();
    assert!(err.contains("derived from serial 1 but serial 2"), "{err}");
    let mut foreign = second.clone();
    foreign.lineage = "other".into();
    assert!(store.write(&foreign).is_err());
    assert_eq!(store.read("dev").unwrap(), Some(second));
    assert_eq!(store.read_serial("dev", 1).unwrap(), first);
    assert_eq!(store.backups("dev").unwrap().iter().map(|b| b.serial).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn the_largest_serial_is_never_followed_by_a_wrapped_one() {
    let store = MemoryStore::default();
    let mut last = store.write(&State::empty("dev")).unwrap();
    last.serial = u64::MAX;
    store.current.borrow_mut().insert("dev".into(), last.clone());
    let err = store.write(&last).unwrap_err().to_string();
    assert!(err.contains("18446744073709551615") && err.contains("wrap"), "{err}");
    assert_eq!(store.read("dev").unwrap(), Some(last), "nothing written");
}

#[test]
fn memory_store_keeps_serial_and_lineage() {
    exercise(&MemoryStore::default());
}

#[test]
fn file_store_keeps_serial_and_lineage() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&FileStore::new(dir.path()));
}

#[test]
fn a_store_keeping_the_text_it_read_keeps_serial_and_lineage() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&FileStore::new(dir.path()).keeping_text());
}

#[test]
fn a_kept_text_is_trusted_only_while_the_file_is_the_one_read() {
    let dir = tempfile::tempdir().unwrap();
    let session = FileStore::new(dir.path()).keeping_text();
    let other = FileStore::new(dir.path());
    let first = other.write(&State::empty("dev")).unwrap();
    let mut read = session.read("dev").unwrap().unwrap();
    assert_eq!(read, first);
    // Another writer replaces the file after the read: the write reads it again and refuses.
    let second = other.write(&first).unwrap();
    let err = session.write_in_place(&mut read).unwrap_err().to_string();
    assert!(err.contains("derived from serial 1 but serial 2"), "{err}");
    assert_eq!(read, first, "left as it was on an error");
    // Read again: the write goes through in place and backs up what it replaced.
    let mut read = session.read("dev").unwrap().unwrap();
    session.write_in_place(&mut read).unwrap();
    assert_eq!((read.serial, &read.lineage), (3, &first.lineage));
    assert_eq!(session.read("dev").unwrap().as_ref(), Some(&read));
    assert_eq!(session.read_serial("dev", 2).unwrap(), second);
    // An edit of the file in place (same inode, same size) after the read is seen too.
    let path = dir.path().join("dev.json");
    let edited = fs::read_to_string(&path).unwrap().replace("\"serial\": 3,", "\"serial\": 9,");
    fs::write(&path, edited).unwrap();
    let err = session.write_in_place(&mut read).unwrap_err().to_string();
    assert!(err.contains("derived from serial 3 but serial 9"), "{err}");
    assert_eq!(read.serial, 3);
}

#[test]
fn a_written_state_shows_its_head_in_its_first_lines_and_other_layouts_are_read_whole() {
    let mut state = State::empty("dev");
    state.lineage = "l-1".into();
    state.serial = 41;
    let text = state.to_json();
    assert_eq!(Head::of_written(&text), Some(Head { lineage: "l-1".into(), serial: 41 }));
    // Keys in another order, on one line, or nested values first: not guessed at.
    assert_eq!(Head::of_written(r#"{"serial": 41, "lineage": "l-1", "env": "dev"}"#), None);
    assert_eq!(Head::of_written("{\n  \"x\": {\"serial\": 1},\n  \"env\": \"dev\"\n}"), None);
    // A write still refuses a state derived from another serial, read from the head alone.
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    let first = store.write(&State::empty("dev")).unwrap();
    let mut stale = first.clone();
    stale.serial = 0;
    assert!(store.write(&stale).is_err());
    assert_eq!(store.write(&first).unwrap().serial, 2);
}

#[test]
fn file_store_keeps_the_last_hundred_backups_and_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    let mut state = State::empty("prod");
    for _ in 0..105 {
        state = store.write(&state).unwrap();
    }
    let backups = store.backups("prod").unwrap();
    // The newest hundred, and the full backup of serial 1 that deltas 5 to 10 need.
    let serials: Vec<u64> = backups.iter().map(|b| b.serial).collect();
    assert_eq!(serials, [1].into_iter().chain(5..=104).collect::<Vec<_>>());
    for (backup, read) in store.read_backups("prod").unwrap() {
        assert_eq!(read.unwrap().serial, backup.serial);
    }
    // Once no delta needs it, it goes too.
    for _ in 0..6 {
        state = store.write(&state).unwrap();
    }
    let serials: Vec<u64> = store.backups("prod").unwrap().iter().map(|b| b.serial).collect();
    assert_eq!(serials, (11..=110).collect::<Vec<_>>());
    assert!(temporaries(dir.path()).is_empty());
    assert!(temporaries(&dir.path().join(".backups/prod")).is_empty());
}

fn temporaries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp."))
        .collect()
}

/// `n` writes of `env` with a changing `appliedAt`; the states written, in order.
fn history(store: &FileStore, env: &str, n: usize) -> Vec<State> {
    let mut state = store.read_or_empty(env).unwrap();
    let mut written = Vec::new();
    for i in 0..n {
        state.applied_at = Some(format!("write {i} of a history"));
        state = store.write(&state).unwrap();
        written.push(state.clone());
    }
    written
}

fn header_of(store: &FileStore, env: &str, serial: u64) -> backup::Header {
    backup::read_header(&store.backup_dir(env).join(backup::file_name(serial))).unwrap()
}

#[test]
fn every_backup_reads_back_as_it_was_written_full_ones_every_ten_serials() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    let written = history(&store, "dev", 25);
    for state in &written[..24] {
        assert_eq!(&store.read_serial("dev", state.serial).unwrap(), state);
    }
    let rows = store.read_backups("dev").unwrap();
    assert_eq!(rows.len(), 24);
    for ((backup, read), state) in rows.into_iter().zip(&written) {
        assert!(backup.is_compressed());
        assert_eq!(&read.unwrap(), state);
        let header = header_of(&store, "dev", backup.serial);
        assert_eq!((header.serial, header.lineage.as_str()), (state.serial, state.lineage.as_str()));
        // Serial 1 is the first backup: full; then a full one every ten serials.
        let full = (backup.serial - 1) % backup::GROUP_SERIALS == 0;
        assert_eq!(header.reference.is_none(), full, "serial {}", backup.serial);
        if let Some(reference) = header.reference {
            assert_eq!(reference.serial, backup.serial - (backup.serial - 1) % backup::GROUP_SERIALS);
        }
    }
}

#[test]
fn plain_backups_written_before_are_read_beside_compressed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let plain = FileStore::new(dir.path()).with_plain_backups();
    let before = history(&plain, "dev", 4);
    let store = FileStore::new(dir.path());
    let after = history(&store, "dev", 3);
    let rows = store.read_backups("dev").unwrap();
    let compressed: Vec<(u64, bool)> = rows.iter().map(|(b, _)| (b.serial, b.is_compressed())).collect();
    assert_eq!(compressed, [(1, false), (2, false), (3, false), (4, true), (5, true), (6, true)]);
    for ((_, read), state) in rows.into_iter().zip(before.iter().chain(&after)) {
        assert_eq!(&read.unwrap(), state);
    }
    // A plain file beside a compressed one of the same serial: listed once, the compressed
    // one (both files go when the serial is rotated out).
    let backups = store.backup_dir("dev");
    fs::write(backups.join("0000000005.json"), "left over").unwrap();
    assert_eq!(store.backups("dev").unwrap().len(), 6);
    assert_eq!(store.read_serial("dev", 5).unwrap(), after[0]);
}

#[test]
fn a_damaged_backup_is_reported_alone_and_a_damaged_full_one_names_its_deltas_reference() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    let written = history(&store, "dev", 16);
    let backups = store.backup_dir("dev");
    // A delta (serial 3) damaged in its compressed data; the full backup of serial 11
    // (deltas 12 to 15 were made against it) cut short.
    let delta = backups.join(backup::file_name(3));
    let mut bytes = fs::read(&delta).unwrap();
    let last = bytes.len() - 6;
    bytes[last] ^= 0xff;
    fs::write(&delta, bytes).unwrap();
    let full = backups.join(backup::file_name(11));
    let bytes = fs::read(&full).unwrap();
    fs::write(&full, &bytes[..bytes.len() / 2]).unwrap();

    let rows = store.read_backups("dev").unwrap();
    assert_eq!(rows.len(), 15);
    for (backup, read) in &rows {
        match backup.serial {
            3 | 11 => {
                let err = read.as_ref().unwrap_err().to_string();
                let name = format!("state/.backups/dev/{}: the backup is damaged: ", backup::file_name(backup.serial));
                assert!(err.starts_with(&name), "{err}");
                assert!(err.contains("enact state restore SERIAL"), "{err}");
            }
            12..=15 => {
                let err = read.as_ref().unwrap_err().to_string();
                assert!(err.contains("compressed against the backup of serial 11, which is damaged"), "{err}");
            }
            serial => assert_eq!(read.as_ref().unwrap(), &written[serial as usize - 1]),
        }
    }
    // Rollback (`read_serial`) and restore refuse them, saying why; nothing is written.
    let err = store.read_serial("dev", 13).unwrap_err().to_string();
    assert!(err.contains("serial 11, which is damaged"), "{err}");
    let err = store.restore("dev", 3).unwrap_err().to_string();
    assert!(err.contains("the backup is damaged"), "{err}");
    assert_eq!(store.read("dev").unwrap().as_ref(), written.last());
    // The next backups do not build on the damaged full one: a new one is written.
    history(&store, "dev", 1);
    assert_eq!(header_of(&store, "dev", 16).reference, None);

    // The kinds behind those messages.
    let text = |serial: u64| {
        let path = backups.join(backup::file_name(serial));
        BackupReader::new(&store, "dev").text(&Backup { serial, path })
    };
    assert!(matches!(text(3), Err(BackupError::Damaged { damage: Damage::Undecodable(_), .. })), "{:?}", text(3));
    assert!(
        matches!(text(12), Err(BackupError::Reference { reference: ReferenceError::Damaged { serial: 11, .. }, .. })),
        "{:?}",
        text(12)
    );

    // A missing reference, and one replaced by another file of its serial, are named too.
    fs::remove_file(&full).unwrap();
    let err = store.read_serial("dev", 12).unwrap_err().to_string();
    assert!(err.contains("serial 11, which is missing"), "{err}");
    assert!(matches!(
        text(12),
        Err(BackupError::Reference { reference: ReferenceError::Missing { serial: 11, .. }, .. })
    ));
    fs::copy(backups.join(backup::file_name(1)), &full).unwrap();
    let err = store.read_serial("dev", 12).unwrap_err().to_string();
    assert!(err.contains("holds serial 1") || err.contains("was replaced"), "{err}");
    assert!(matches!(
        text(12),
        Err(BackupError::Reference { reference: ReferenceError::Replaced { serial: 11, .. }, .. })
    ));
}

#[test]
fn a_prepared_backup_is_renamed_into_place_and_never_read_half_made() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    let written = history(&store, "dev", 3);
    let backups = store.backup_dir("dev");

    // Prepared, then written: the compressed file is the prepared one, no temporary is left.
    store.prepare_backup("dev", &written[2]);
    let next = history(&store, "dev", 1).remove(0);
    assert_eq!(store.read_serial("dev", 3).unwrap(), written[2]);
    store.finish_backup();
    assert_eq!(store.read_serial("dev", 3).unwrap(), written[2]);
    assert!(backups.join("0000000003.json.zst").exists() && !backups.join("0000000003.json").exists());
    assert!(temporaries(&backups).is_empty());

    // The state file changed by hand after the backup was prepared: the write backs up what
    // the file holds now, not what was prepared.
    store.prepare_backup("dev", &next);
    let mut edited = next;
    edited.applied_at = Some("edited by hand".to_string());
    fs::write(store.path("dev"), edited.to_json()).unwrap();
    history(&store, "dev", 1);
    assert_eq!(store.read_serial("dev", 4).unwrap(), edited);
    store.finish_backup();
    assert_eq!(store.read_serial("dev", 4).unwrap(), edited);
    assert!(backups.join("0000000004.json.zst").exists() && !backups.join("0000000004.json").exists());
    assert!(temporaries(&backups).is_empty());

    // Prepared but never written (a plan without changes): dropping the store removes it.
    let current = store.read("dev").unwrap().unwrap();
    let other = store.clone();
    other.prepare_backup("dev", &current);
    drop(other); // `store` shares it still
    drop(store);
    assert!(temporaries(&backups).is_empty());

    // What a killed write leaves: temporaries never listed, removed once their process is
    // gone, and a plain backup (the interrupted rename) read as such.
    let store = FileStore::new(dir.path());
    let dead = u32::MAX - 1;
    for name in [format!(".0000000006.json.zst.tmp.{dead}"), format!(".0000000006.json.zst.prepared.tmp.{dead}")] {
        fs::write(backups.join(name), b"half").unwrap();
    }
    let mine = format!(".0000000007.json.zst.tmp.{}", std::process::id());
    fs::write(backups.join(&mine), b"being written").unwrap();
    assert_eq!(store.backups("dev").unwrap().len(), 4);
    history(&store, "dev", 1);
    assert_eq!(temporaries(&backups), [mine]);
    assert_eq!(store.read_backups("dev").unwrap().into_iter().filter(|(_, r)| r.is_ok()).count(), 5);
}

#[test]
fn a_backup_still_being_prepared_at_the_write_is_a_plain_link_until_it_is_ready() {
    // The thread read the state file before the write (the usual case), or after it (it
    // then holds the next state: the plain link is compressed when the store lets go).
    for read_late in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let written = history(&store, "dev", 2);
        let backups = store.backup_dir("dev");
        // A prepared backup of serial 2 whose thread waits until it is told to go on.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (path, at, lineage) = (store.path("dev"), backups.clone(), written[1].lineage.clone());
        let handle = std::thread::spawn(move || {
            let early = fs::read(&path).ok()?;
            wait.recv().ok()?;
            let text = if read_late { fs::read(&path).ok()? } else { early };
            let bytes = backup::encode_backup(&at, 2, &lineage, &text, &AtomicBool::new(false)).ok()??;
            let tmp = at.join(format!(".0000000002.json.zst.prepared.tmp.{}", std::process::id()));
            write_synced(&tmp, &bytes).ok()?;
            Some(Ready { tmp, hash: content_hash(&text) })
        });
        *store.prepared.lock().unwrap() = Some(Prepared {
            env: "dev".into(),
            serial: 2,
            lineage: written[1].lineage.clone(),
            cancel: Arc::default(),
            handle: Some(handle),
            commit: None,
        });
        history(&store, "dev", 1);
        let (plain, compressed) = (backups.join("0000000002.json"), backups.join("0000000002.json.zst"));
        assert!(plain.exists() && !compressed.exists(), "the write did not wait: a plain link meanwhile");
        assert_eq!(store.read_serial("dev", 2).unwrap(), written[1]);
        go.send(()).unwrap();
        store.finish_backup();
        assert!(!plain.exists() && compressed.exists(), "then the compressed file replaces it");
        assert_eq!(store.read_serial("dev", 2).unwrap(), written[1], "read late: {read_late}");
        assert!(temporaries(&backups).is_empty());
    }
}

#[test]
fn a_state_put_back_at_a_serial_keeps_the_backup_deltas_were_made_against() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    let written = history(&store, "dev", 5);
    let id = header_of(&store, "dev", 1).id;
    // state/dev.json put back to serial 1 (from git, say), then applied again.
    fs::write(store.path("dev"), written[0].to_json()).unwrap();
    history(&store, "dev", 1);
    assert_eq!(header_of(&store, "dev", 1).id, id, "the same text: the file stays");
    for serial in [1, 3, 4] {
        assert_eq!(store.read_serial("dev", serial).unwrap(), written[serial as usize - 1]);
    }
}

#[test]
fn the_file_is_deterministic_pretty_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    let state = store.write(&State::empty("dev")).unwrap();
    let text = fs::read_to_string(store.path("dev")).unwrap();
    assert_eq!(text, state.to_json());
    assert!(text.ends_with("}\n") && text.contains("\n  \"serial\": 1,"));
}

#[test]
fn a_damaged_state_names_file_line_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    fs::write(store.path("dev"), "{\n  \"formatVersion\": 1,\n  \"lineage\": oops\n}").unwrap();
    let err = store.read("dev").unwrap_err().to_string();
    assert!(err.starts_with("state/dev.json:3:"), "{err}");
    assert!(err.contains("restore it from git"), "{err}");
}
