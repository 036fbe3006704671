//! Every input the fuzz targets (`fuzz/`, see fuzz/README.md) found a crash with, minimised, fed
//! through the same public entry point as the target, with the error or result it must give now.

use enact::apply::journal::{self, Record};

/// journal_read's seed journal is read whole: every record kind, no damaged line, and the start
/// whose outcome never came is left open.
#[test]
fn the_seed_journal_reads_whole() {
    let bytes = include_bytes!("../fuzz/seeds/journal_read/interrupted.journal");
    let replay = journal::parse(bytes);
    assert!(replay.torn.is_empty(), "{:?}", replay.torn);
    assert_eq!(replay.records.len(), 14);
    assert_eq!(replay.begin, Some(("3f2c0000-0000-4000-8000-000000000001".to_string(), 3)));
    assert_eq!(replay.open.len(), 1, "{:?}", replay.open);
    assert!(matches!(replay.records[13], Record::ServiceRemoved { .. }));
    let torn = journal::parse(include_bytes!("../fuzz/seeds/journal_read/torn.journal"));
    assert_eq!((torn.records.len(), torn.torn.as_slice()), (5, &[6][..]));
}
