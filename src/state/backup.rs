//! The compressed backup format: `state/.backups/<env>/<serial>.json.zst`.
//!
//! A backup file is a zstd skippable frame holding a small JSON [`Header`], then one zstd frame
//! (level [`LEVEL`], with the content size and a checksum of the content) of the state's text as
//! the state file held it, byte for byte. A *full* backup's frame stands alone. A *delta*'s frame
//! was compressed with the text of a full backup of the same environment as a zstd prefix (what
//! `zstd --patch-from` does): it holds little more than what changed between the two, and it is
//! read with that full backup (its [`Reference`], named by serial and id) present and readable.
//!
//! Which one [`encode_backup`] writes: a delta against the full backup that the newest older
//! backup is, or was made against, while that full backup is of the same lineage and fewer than
//! [`GROUP_SERIALS`] serials older; otherwise a full backup. So a damaged delta costs itself alone,
//! and a damaged full backup costs itself and the deltas made against it (at most
//! `GROUP_SERIALS - 1`), which are then reported as unreadable, naming it.
//!
//! `zstd -d` reads the files (it skips the header): a full one as it is, a delta with
//! `--patch-from=` its reference's text and `--long=31`. docs/formats.md §6 describes the files.
//!
//! Depends on nothing else of enact: errors are [`Damage`] and [`HeaderError`], which the store
//! turns into messages naming the file.

use std::fs::{self, File};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DParameter};

/// The magic number of the skippable zstd frame that opens every compressed backup (zstd
/// reserves `0x184D2A50`–`0x184D2A5F` for such frames; enact takes the last nibble `E`).
pub const HEADER_MAGIC: u32 = 0x184D_2A5E;

/// The version of the header and the format it describes; a newer one is refused.
pub const FORMAT: u32 = 1;

/// The zstd level of full backups (zstd's default).
pub const LEVEL: i32 = 3;

/// The zstd level of deltas: as small as at [`LEVEL`] (what matters is long-distance matching
/// against the reference), and faster.
pub const DELTA_LEVEL: i32 = 1;

/// A full backup is written at least once every this many serials; the backups between are
/// deltas against it.
pub const GROUP_SERIALS: u64 = 10;

/// Headers are tiny; a longer one is damage.
const HEADER_MAX: usize = 4096;

/// No state is a terabyte: a larger content size in a frame is damage, never an allocation.
const CONTENT_MAX: u64 = 1 << 40;

/// The JSON header of a compressed backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// [`FORMAT`].
    pub format: u32,
    /// The serial of the state it holds (the file name's).
    pub serial: u64,
    /// The lineage of the state it holds.
    pub lineage: String,
    /// 16 random hex digits, new for every file: what a delta names its reference by.
    pub id: String,
    /// For a delta, the full backup its frame was compressed against; absent for a full one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

/// The full backup a delta was compressed against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// Its serial: the file `<serial>.json.zst` beside the delta.
    pub serial: u64,
    /// Its [`Header::id`]: a file of that serial written since (another history) is not it.
    pub id: String,
}

/// The name of the compressed backup of `serial`: ten digits, `.json.zst`.
pub fn file_name(serial: u64) -> String {
    format!("{serial:010}.json.zst")
}

/// The name of an uncompressed backup of `serial` (what enact wrote before, and still reads).
pub fn plain_file_name(serial: u64) -> String {
    format!("{serial:010}.json")
}

/// The serial a backup file name stands for and whether it is compressed, or `None` for any
/// other name (temporary files, `damaged-<serial>.json`).
pub fn parse_file_name(name: &str) -> Option<(u64, bool)> {
    let (digits, compressed) = match name.strip_suffix(".json.zst") {
        Some(digits) => (digits, true),
        None => (name.strip_suffix(".json")?, false),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, compressed))
}

/// What is wrong with the bytes of a compressed backup, in words that follow "the backup is
/// damaged: " in a message; the store names the file and what to do (`enact history`,
/// `enact state restore`).
#[derive(Debug, thiserror::Error)]
pub enum Damage {
    /// The file does not open with enact's skippable frame ([`HEADER_MAGIC`]).
    #[error("it does not start with an enact backup header")]
    NotABackup,
    /// The file is shorter than the 8 bytes (magic and length) every header starts with.
    #[error("it is cut short ({len} bytes)")]
    CutShort {
        /// The length of the file, in bytes.
        len: usize,
    },
    /// The header claims more bytes than a header may have (4096) or the file holds.
    #[error("its header is cut short or damaged (it claims {claimed} bytes)")]
    HeaderCut {
        /// The header length the file states, in bytes.
        claimed: usize,
    },
    /// The header is not the JSON of a [`Header`].
    #[error("its header is damaged ({source})")]
    Header {
        /// What the JSON parser found.
        source: serde_json::Error,
    },
    /// The header is of a later [`FORMAT`]: a newer enact wrote it.
    #[error("it is in backup format {format}, newer than this enact understands ({FORMAT}); upgrade enact")]
    NewerFormat {
        /// The format the header states.
        format: u32,
    },
    /// The zstd frame states a content size no state has (over 1 TiB).
    #[error("its frame claims {size} bytes, more than any state")]
    Oversized {
        /// The content size the frame states, in bytes.
        size: u64,
    },
    /// The zstd frame does not state its content size (enact always writes it).
    #[error("its frame does not record its size")]
    NoSize,
    /// What follows the header is not a zstd frame.
    #[error("its compressed data does not start with a zstd frame")]
    NotZstd,
    /// The content size does not fit in this machine's addresses.
    #[error("its frame is larger than memory")]
    LargerThanMemory,
    /// The memory for the content could not be had.
    #[error("cannot hold its {size} bytes ({source})")]
    NoMemory {
        /// The content size, in bytes.
        size: usize,
        /// Why the allocation failed.
        source: std::collections::TryReserveError,
    },
    /// zstd could not make a decompression context (out of memory).
    #[error("zstd: cannot create a context")]
    NoContext,
    /// zstd refused a parameter or the reference, with its error name.
    #[error("{0}")]
    Zstd(&'static str),
    /// The compressed data does not decode (damaged data, a checksum that does not match, or a
    /// delta decoded against another text than its reference), with zstd's error name.
    #[error("its compressed data does not decode ({0})")]
    Undecodable(&'static str),
    /// The content decodes to another size than the frame states.
    #[error("it decodes to {written} bytes where its frame says {size}")]
    WrongSize {
        /// The bytes decoded.
        written: usize,
        /// The content size the frame states, in bytes.
        size: usize,
    },
    /// The header names another serial than the file name.
    #[error("it holds serial {held}, not the {named} of its name")]
    WrongSerial {
        /// The serial of the header.
        held: u64,
        /// The serial of the file name.
        named: u64,
    },
    /// The content is not UTF-8, so not the text of a state.
    #[error("it decodes to text that is not UTF-8")]
    NotText,
}

/// Why [`read_header`] has no header for a file.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The file cannot be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The backup file.
        path: PathBuf,
        /// What the filesystem said.
        source: io::Error,
    },
    /// The file's first bytes are not a header this enact reads.
    #[error("{}: the backup is damaged: {damage}", path.display())]
    Damaged {
        /// The backup file.
        path: PathBuf,
        /// What is wrong.
        damage: Damage,
    },
}

/// Splits a compressed backup into its header and its zstd frame.
///
/// # Errors
/// [`Damage`] when the bytes do not start with a readable header of a format this enact
/// understands.
pub fn split_header(bytes: &[u8]) -> Result<(Header, &[u8]), Damage> {
    let word = |at: usize| bytes.get(at..at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_le_bytes);
    match word(0) {
        Some(HEADER_MAGIC) => {}
        Some(_) => return Err(Damage::NotABackup),
        None => return Err(Damage::CutShort { len: bytes.len() }),
    }
    let len = word(4).ok_or(Damage::CutShort { len: bytes.len() })? as usize;
    if len > HEADER_MAX || bytes.len() < 8 + len {
        return Err(Damage::HeaderCut { claimed: len });
    }
    let header: Header = serde_json::from_slice(&bytes[8..8 + len]).map_err(|source| Damage::Header { source })?;
    if header.format > FORMAT {
        return Err(Damage::NewerFormat { format: header.format });
    }
    Ok((header, &bytes[8 + len..]))
}

/// The header of the compressed backup at `path`, reading only its first bytes.
///
/// # Errors
/// [`HeaderError::Read`] when the file cannot be read, [`HeaderError::Damaged`] when it has no
/// readable header.
pub fn read_header(path: &Path) -> Result<Header, HeaderError> {
    let mut start = Vec::new();
    File::open(path)
        .and_then(|f| f.take(8 + HEADER_MAX as u64).read_to_end(&mut start))
        .map_err(|source| HeaderError::Read { path: path.to_path_buf(), source })?;
    match split_header(&start) {
        Ok((header, _)) => Ok(header),
        Err(damage) => Err(HeaderError::Damaged { path: path.to_path_buf(), damage }),
    }
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::other(zstd_safe::get_error_name(code))
}

/// Compresses `text` after `header` (the file's whole content), against `reference` (the text
/// of the full backup the header names) when given. `None` when `cancel` was set before the
/// compression started (once started, it runs to its end: 20–60 ms at 10,000 services).
///
/// # Errors
/// zstd refuses (out of memory, a parameter out of range).
pub fn encode(
    text: &[u8],
    header: &Header,
    reference: Option<&[u8]>,
    cancel: &AtomicBool,
) -> io::Result<Option<Vec<u8>>> {
    let payload = serde_json::to_vec(header).map_err(io::Error::other)?;
    let mut cctx = CCtx::try_create().ok_or_else(|| io::Error::other("zstd: cannot create a context"))?;
    cctx.set_parameter(CParameter::ChecksumFlag(true)).map_err(zstd_error)?;
    cctx.set_parameter(CParameter::ContentSizeFlag(true)).map_err(zstd_error)?;
    match reference {
        None => {
            cctx.set_parameter(CParameter::CompressionLevel(LEVEL)).map_err(zstd_error)?;
        }
        Some(reference) => {
            // As `zstd --patch-from`: a window reaching back over the whole reference, and
            // long-distance matching to find it there.
            cctx.set_parameter(CParameter::CompressionLevel(DELTA_LEVEL)).map_err(zstd_error)?;
            let largest = reference.len().max(text.len()).max(1) as u64;
            let window_log = (u64::BITS - largest.leading_zeros() + 1).clamp(10, 30);
            cctx.set_parameter(CParameter::WindowLog(window_log)).map_err(zstd_error)?;
            cctx.set_parameter(CParameter::EnableLongDistanceMatching(true)).map_err(zstd_error)?;
            cctx.ref_prefix(reference).map_err(zstd_error)?;
        }
    }
    if cancel.load(Ordering::Relaxed) {
        return Ok(None);
    }
    // In one call: faster than streaming (which copies the input into zstd's window).
    let mut frame = Vec::new();
    frame.try_reserve_exact(zstd_safe::compress_bound(text.len())).map_err(io::Error::other)?;
    cctx.compress2(&mut frame, text).map_err(zstd_error)?;
    let mut out = Vec::with_capacity(8 + payload.len() + frame.len());
    out.extend_from_slice(&HEADER_MAGIC.to_le_bytes());
    out.extend_from_slice(&u32::try_from(payload.len()).map_err(io::Error::other)?.to_le_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&frame);
    Ok(Some(out))
}

/// Decompresses a backup's zstd `frame` (after its header), against `reference` for a delta.
///
/// # Errors
/// [`Damage`]: no content size, a size no state has, zstd's error (damaged data, a checksum
/// that does not match, a wrong reference), or another size than the frame states.
pub fn decode(frame: &[u8], reference: Option<&[u8]>) -> Result<Vec<u8>, Damage> {
    let size = match zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) if size <= CONTENT_MAX => size,
        Ok(Some(size)) => return Err(Damage::Oversized { size }),
        Ok(None) => return Err(Damage::NoSize),
        Err(_) => return Err(Damage::NotZstd),
    };
    let size = usize::try_from(size).map_err(|_| Damage::LargerThanMemory)?;
    let mut out = Vec::new();
    out.try_reserve_exact(size).map_err(|source| Damage::NoMemory { size, source })?;
    let mut dctx = DCtx::try_create().ok_or(Damage::NoContext)?;
    dctx.set_parameter(DParameter::WindowLogMax(31)).map_err(|c| Damage::Zstd(zstd_safe::get_error_name(c)))?;
    if let Some(reference) = reference {
        dctx.ref_prefix(reference).map_err(|c| Damage::Zstd(zstd_safe::get_error_name(c)))?;
    }
    let written = dctx.decompress(&mut out, frame).map_err(|c| Damage::Undecodable(zstd_safe::get_error_name(c)))?;
    if written != size {
        return Err(Damage::WrongSize { written, size });
    }
    Ok(out)
}

/// A new header id: 16 random hex digits.
pub fn new_id() -> String {
    let mut bytes = [0u8; 8];
    if File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes = ((nanos as u64) ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The backups in `dir` by serial, each with its path: the compressed file when a serial has
/// both (a write interrupted between the two).
///
/// # Errors
/// The directory exists but cannot be listed.
pub fn list(dir: &Path) -> io::Result<std::collections::BTreeMap<u64, PathBuf>> {
    let mut found = std::collections::BTreeMap::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((serial, compressed)) = name.to_str().and_then(parse_file_name) else {
            continue;
        };
        if compressed || !found.contains_key(&serial) {
            found.insert(serial, entry.path());
        }
    }
    Ok(found)
}

/// The full backup a backup of `serial` in `lineage` is best compressed against, with its text:
/// the one the newest older backup is or refers to, if it is of the same lineage, fewer than
/// [`GROUP_SERIALS`] serials older, and readable. `None`: write a full backup.
pub fn choose_reference(dir: &Path, serial: u64, lineage: &str) -> Option<(Reference, Vec<u8>)> {
    let backups = list(dir).ok()?;
    let (_, path) = backups.range(..serial).next_back()?;
    if path.extension().is_none_or(|e| e != "zst") {
        return None;
    }
    let header = read_header(path).ok()?;
    if header.lineage != lineage {
        return None;
    }
    let reference = header.reference.unwrap_or(Reference { serial: header.serial, id: header.id });
    if serial.checked_sub(reference.serial)? >= GROUP_SERIALS {
        return None;
    }
    let bytes = fs::read(dir.join(file_name(reference.serial))).ok()?;
    let (full, frame) = split_header(&bytes).ok()?;
    if full.id != reference.id || full.reference.is_some() || full.lineage != lineage {
        return None;
    }
    let text = decode(frame, None).ok()?;
    Some((reference, text))
}

/// The content of the compressed backup of `serial`: a delta against the reference
/// [`choose_reference`] finds, else a full backup. `None` when `cancel` was set meanwhile.
///
/// # Errors
/// zstd refuses.
pub fn encode_backup(
    dir: &Path,
    serial: u64,
    lineage: &str,
    text: &[u8],
    cancel: &AtomicBool,
) -> io::Result<Option<Vec<u8>>> {
    if cancel.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let chosen = choose_reference(dir, serial, lineage);
    let header = Header {
        format: FORMAT,
        serial,
        lineage: lineage.to_string(),
        id: new_id(),
        reference: chosen.as_ref().map(|(r, _)| r.clone()),
    };
    encode(text, &header, chosen.as_ref().map(|(_, t)| t.as_slice()), cancel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(serial: u64, reference: Option<Reference>) -> Header {
        Header { format: FORMAT, serial, lineage: "l".into(), id: new_id(), reference }
    }

    #[test]
    fn names_are_ten_digits_and_only_backups_are_read_as_such() {
        assert_eq!(file_name(7), "0000000007.json.zst");
        assert_eq!(parse_file_name("0000000007.json.zst"), Some((7, true)));
        assert_eq!(parse_file_name("0000000007.json"), Some((7, false)));
        for other in [".0000000007.json.zst.tmp.42", "damaged-0000000003.json", "+7.json", ".json", "7.json.zst.tmp"] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn a_full_and_a_delta_round_trip_and_the_delta_is_small() {
        let never = AtomicBool::new(false);
        let base: String =
            (0..20_000).map(|i| format!("{{\"name\": \"svc-{i:05}\", \"port\": {}}},\n", 20_000 + i)).collect();
        let next = base.replacen("\"svc-10000\", \"port\": 30000", "\"svc-10000\", \"port\": 30001", 1);
        assert_ne!(base, next);
        let full = encode(base.as_bytes(), &header(1, None), None, &never).unwrap().unwrap();
        let (h, frame) = split_header(&full).unwrap();
        assert_eq!((h.serial, h.reference), (1, None));
        assert_eq!(decode(frame, None).unwrap(), base.as_bytes());

        let reference = Reference { serial: 1, id: "x".into() };
        let delta = encode(next.as_bytes(), &header(2, Some(reference.clone())), Some(base.as_bytes()), &never)
            .unwrap()
            .unwrap();
        let (h, frame) = split_header(&delta).unwrap();
        assert_eq!(h.reference, Some(reference));
        assert_eq!(decode(frame, Some(base.as_bytes())).unwrap(), next.as_bytes());
        assert!(delta.len() * 20 < full.len(), "delta {} bytes, full {}", delta.len(), full.len());
        // Without its reference, or against another text, a delta never decodes to a wrong
        // text: the checksum of the content catches it.
        assert!(decode(frame, None).is_err());
        assert!(decode(frame, Some(base.replace("svc", "SVC").as_bytes())).is_err());
    }

    #[test]
    fn damage_is_named_never_a_panic() {
        let never = AtomicBool::new(false);
        let text = "{\"serial\": 1}\n".repeat(1000);
        let bytes = encode(text.as_bytes(), &header(1, None), None, &never).unwrap().unwrap();
        let (_, frame) = split_header(&bytes).unwrap();
        let body = bytes.len() - frame.len();
        // Every byte flipped in turn: an error, or the very text (a bit zstd does not need),
        // never another text.
        let mut errors = 0;
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x55;
            match split_header(&damaged).and_then(|(_, f)| decode(f, None)) {
                Err(_) => errors += 1,
                Ok(decoded) => assert_eq!(decoded, text.as_bytes(), "byte {at} flipped"),
            }
        }
        assert!(errors > bytes.len() / 2, "{errors} of {} flips noticed", bytes.len());
        for cut in [0, 3, 7, 12, body, bytes.len() - 1] {
            let result = split_header(&bytes[..cut]).and_then(|(_, f)| decode(f, None));
            assert!(result.is_err(), "cut at {cut}");
        }
        assert!(matches!(split_header(b"{\"formatVersion\": 1}"), Err(Damage::NotABackup)));
        assert!(matches!(split_header(b"\x5e\x2a"), Err(Damage::CutShort { len: 2 })));
        let mut newer = bytes.clone();
        let at = newer.windows(10).position(|w| w == b"\"format\":1").unwrap();
        newer[at + 9] = b'9';
        let newer = split_header(&newer).unwrap_err();
        assert!(matches!(newer, Damage::NewerFormat { format: 9 }), "{newer:?}");
        assert!(newer.to_string().ends_with("upgrade enact"), "{newer}");
    }

    #[test]
    fn a_cancel_stops_the_compression() {
        let cancelled = AtomicBool::new(true);
        let text = vec![b'x'; 3 << 20];
        assert!(encode(&text, &header(1, None), None, &cancelled).unwrap().is_none());
    }
}
