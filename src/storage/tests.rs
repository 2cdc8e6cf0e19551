//! The store's tests: appends, numbering, FINISH, recovery, files and concurrency.

use super::reader::READ_BUFFER_LEN;
use super::*;
use crate::bet::Bet;
use crate::wire::digest::Hasher;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

fn bet(first: &str, document: &str, number: u16) -> Bet {
    Bet {
        first_name: first.into(),
        last_name: "Gómez".into(),
        document: document.into(),
        birthdate: "1985-12-01".into(),
        number,
    }
}

/// The wire encoding of `bets`, as a BETS body holds them.
fn body_of(bets: &[Bet]) -> Vec<u8> {
    let mut body = Vec::new();
    for bet in bets {
        crate::wire::encode_bet(bet.as_ref(), &mut body).unwrap();
    }
    body
}

/// The digest of `bets`, computed apart from the store.
fn digest_of(bets: &[Bet]) -> Digest {
    let mut hasher = Hasher::new();
    hasher.update(&body_of(bets));
    hasher.digest()
}

/// The agency's durable count and whether it finished.
fn counts(store: &BetStore, agency: u32) -> (u64, bool) {
    let state = store.durable_state(agency);
    (state.stored, state.finished)
}

/// Appends `bets` as `agency`'s batch from `first` and waits for the disk.
fn store(store: &BetStore, agency: u32, first: u64, bets: &[Bet]) -> Append {
    let valid: Vec<ValidBet> = bets.iter().map(Bet::valid).collect();
    let outcome = store
        .append_batch(
            agency,
            first,
            &valid,
            &body_of(bets),
            &mut RowBuffer::default(),
        )
        .unwrap();
    if let Append::Stored(appended) | Append::AlreadyStored(appended) = &outcome {
        store.sync(*appended).unwrap();
    }
    outcome
}

fn bets(documents: std::ops::Range<u32>) -> Vec<Bet> {
    documents.map(|d| bet("Ana", &d.to_string(), 1)).collect()
}

/// Every row of the file as (agency, bet).
fn read_all(path: &Path) -> Vec<(u32, Bet)> {
    let mut rows = BetRows::open(path).unwrap();
    let mut all = Vec::new();
    while let Some(row) = rows.next_row() {
        let row = row.unwrap();
        all.push((row.agency, row.to_bet().unwrap()));
    }
    all
}

fn new_store(dir: &tempfile::TempDir, agencies: u32) -> (BetStore, PathBuf) {
    let path = dir.path().join("bets.csv");
    let (store, recovered) = BetStore::open(&path, agencies).unwrap();
    assert!(!recovered.is_resumed());
    (store, path)
}

#[test]
fn stored_bets_load_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (bets_file, path) = new_store(&dir, 5);
    let batch = vec![bet("Ana", "1", 7574), bet("Luis, \"el\"", "2", 1)];
    assert!(matches!(store(&bets_file, 2, 0, &batch), Append::Stored(_)));
    store(&bets_file, 5, 0, &[bet("Eva", "3", 7574)]);
    bets_file.close().unwrap();
    assert_eq!(
        read_all(&path),
        vec![
            (2, batch[0].clone()),
            (2, batch[1].clone()),
            (5, bet("Eva", "3", 7574))
        ]
    );
}

#[test]
fn only_the_batch_that_starts_where_the_stored_bets_end_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let (bets_file, path) = new_store(&dir, 1);
    assert!(matches!(
        store(&bets_file, 1, 0, &bets(0..10)),
        Append::Stored(_)
    ));
    // Sent again after a lost connection: acked, not stored twice.
    assert!(matches!(
        store(&bets_file, 1, 0, &bets(0..10)),
        Append::AlreadyStored(_)
    ));
    assert!(matches!(
        store(&bets_file, 1, 5, &bets(5..10)),
        Append::AlreadyStored(_)
    ));
    // A gap and an overlap store nothing and say where to resume.
    assert!(matches!(
        store(&bets_file, 1, 11, &bets(11..12)),
        Append::OutOfOrder { expected: 10 }
    ));
    assert!(matches!(
        store(&bets_file, 1, 8, &bets(8..12)),
        Append::OutOfOrder { expected: 10 }
    ));
    assert!(matches!(
        store(&bets_file, 1, 10, &bets(10..12)),
        Append::Stored(_)
    ));
    assert_eq!(counts(&bets_file, 1), (12, false));
    // The batches sent again added nothing to the digest either.
    assert_eq!(bets_file.durable_state(1).digest, digest_of(&bets(0..12)));
    assert_eq!(bets_file.durable_state(2).digest, Digest::of_nothing());
    assert_eq!(read_all(&path).len(), 12);
}

#[test]
fn a_finish_needs_the_stored_total_is_recorded_once_and_closes_the_bets() {
    let dir = tempfile::tempdir().unwrap();
    let (bets_file, path) = new_store(&dir, 2);
    store(&bets_file, 1, 0, &bets(0..3));
    let digest = digest_of(&bets(0..3));
    let other = digest_of(&bets(1..4));
    assert_eq!(
        bets_file.record_finish(1, 4, digest).unwrap(),
        Finish::CountMismatch { stored: 3 }
    );
    // The count is judged before the digest.
    assert_eq!(
        bets_file.record_finish(1, 4, other).unwrap(),
        Finish::CountMismatch { stored: 3 }
    );
    assert_eq!(
        bets_file.record_finish(1, 3, other).unwrap(),
        Finish::DigestMismatch { stored: digest }
    );
    assert_eq!(counts(&bets_file, 1), (3, false));
    assert_eq!(bets_file.seal(), None);
    assert_eq!(
        bets_file.record_finish(1, 3, digest).unwrap(),
        Finish::Recorded { first_time: true }
    );
    assert_eq!(
        bets_file.record_finish(1, 3, digest).unwrap(),
        Finish::Recorded { first_time: false }
    );
    // A repeat that differs from the record is refused, and records nothing.
    assert_eq!(
        bets_file.record_finish(1, 3, other).unwrap(),
        Finish::DigestMismatch { stored: digest }
    );
    assert_eq!(
        bets_file.record_finish(1, 2, digest).unwrap(),
        Finish::CountMismatch { stored: 3 }
    );
    assert_eq!(counts(&bets_file, 1), (3, true));
    assert!(matches!(
        store(&bets_file, 1, 3, &bets(3..4)),
        Append::Finished
    ));
    assert!(matches!(
        store(&bets_file, 1, 0, &bets(0..3)),
        Append::Finished
    ));
    // Agency 2 finishes with no bets: the digest of nothing.
    assert_eq!(
        bets_file.record_finish(2, 0, Digest::of_nothing()).unwrap(),
        Finish::Recorded { first_time: true }
    );
    let records = std::fs::read_to_string(finishes::records_path(&path)).unwrap();
    assert_eq!(
        records,
        format!(
            "agencies 2\nfinished 1 3 {digest}\nfinished 2 0 {}\n",
            Digest::of_nothing()
        )
    );
    assert_eq!(
        bets_file.seal(),
        Some(crate::wire::digest::seal([
            (1, 3, digest),
            (2, 0, Digest::of_nothing())
        ]))
    );
}

#[test]
fn the_files_of_a_round_are_for_the_server_user_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (_bets_file, path) = new_store(&dir, 1);
    for file in [path.clone(), finishes::records_path(&path)] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
}

#[test]
fn a_restart_continues_the_round_from_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    {
        let (bets_file, _) = BetStore::open(&path, 3).unwrap();
        store(&bets_file, 1, 0, &bets(0..4));
        store(&bets_file, 2, 0, &bets(10..12));
        assert_eq!(
            bets_file
                .record_finish(2, 2, digest_of(&bets(10..12)))
                .unwrap(),
            Finish::Recorded { first_time: true }
        );
    }
    let (bets_file, recovered) = BetStore::open(&path, 3).unwrap();
    assert_eq!(recovered.bets, 6);
    let rows: HashMap<u32, u64> = recovered
        .per_agency
        .iter()
        .map(|(&agency, rows)| (agency, rows.count))
        .collect();
    assert_eq!(rows, HashMap::from([(1, 4), (2, 2)]));
    assert_eq!(
        recovered.finished,
        HashMap::from([(2, (2, digest_of(&bets(10..12))))])
    );
    assert_eq!(counts(&bets_file, 1), (4, false));
    assert_eq!(counts(&bets_file, 2), (2, true));
    // The digests are rebuilt from the rows, names unquoted.
    assert_eq!(bets_file.durable_state(1).digest, digest_of(&bets(0..4)));
    assert_eq!(bets_file.durable_state(2).digest, digest_of(&bets(10..12)));
    assert!(matches!(
        store(&bets_file, 1, 0, &bets(0..4)),
        Append::AlreadyStored(_)
    ));
    assert!(matches!(
        store(&bets_file, 1, 4, &bets(4..5)),
        Append::Stored(_)
    ));
}

#[test]
fn a_last_row_cut_short_is_cut_off_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let whole = "1,A,B,1,2000-01-01,7574\r\n1,A,B,2,2000-01-01,1\r\n";
    std::fs::write(&path, format!("{whole}1,A,B,3,2000-01-0")).unwrap();
    let (bets_file, recovered) = BetStore::open(&path, 1).unwrap();
    assert_eq!((recovered.bets, recovered.cut_bytes), (2, 17));
    assert!(recovered.records_missing);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
    assert!(matches!(
        store(&bets_file, 1, 2, &bets(3..4)),
        Append::Stored(_)
    ));
    assert_eq!(read_all(&path).len(), 3);
}

/// Opening `text` as a bets file for `agencies` fails, naming `line`, and
/// leaves the file as it was.
fn refused(text: &str, agencies: u32, line: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    std::fs::write(&path, text).unwrap();
    let error = BetStore::open(&path, agencies)
        .err()
        .expect("the start is refused");
    assert!(
        matches!(error, StorageError::BadRow { row, .. } if row == line),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    error.to_string()
}

#[test]
fn a_bad_row_stops_the_start_naming_its_line_and_touches_nothing() {
    let good = "1,A,B,1,2000-01-01,1\r\n";
    let message = refused(&format!("{good}x,A,B,1,2000-01-01,1\r\n{good}"), 1, 2);
    assert!(
        message.contains("line 2") && message.contains("bets.csv"),
        "{message}"
    );
    refused(&format!("{good}1,\"A,B,1,2000-01-01,1\r\n{good}"), 1, 2);
    let message = refused(&format!("{good}7,A,B,1,2000-01-01,1\r\n{good}"), 5, 2);
    assert!(message.contains("agency 7"), "{message}");
    refused(&format!("{good}\r\n{good}"), 1, 2);
}

#[test]
fn rows_read_back_are_held_to_the_bet_rules() {
    let good = "1,A,B,1,2000-01-01,1\r\n";
    for (bad, wanted) in [
        ("1,A,B,1,2000-01-01,10000", "number"),
        ("1,A,B,12345678901,2000-01-01,1", "document"),
        ("1,A,B,1,1990-02-30,1", "date"),
        ("1,A,B,1,2999-01-01,1", "after today"),
        ("1,\u{200B},B,1,2000-01-01,1", "letter"),
        ("1,A\u{0}x,B,1,2000-01-01,1", "control"),
    ] {
        // In the middle of the round: the start stops, naming the line.
        let message = refused(&format!("{good}{bad}\r\n{good}"), 1, 2);
        assert!(
            message.contains("breaks a rule") && message.contains(wanted),
            "{bad:?}: {message}"
        );
    }
}

#[test]
fn a_damaged_tail_is_moved_aside_and_never_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let good = "1,A,B,1,2000-01-01,1\r\n";
    let nuls = "\u{0}".repeat(4096);
    for tail in [
        format!("1,A,B,2,2000-01-01,10000\r\n{nuls}"),
        nuls.clone(),
        format!("{nuls}\n1,A,B,3,2000-0"),
        "x,A,B,1,2000-01-01,1\r\n1,\"A,B,1\r\n".to_string(),
    ] {
        let text = format!("{good}{good}{tail}");
        std::fs::write(&path, &text).unwrap();
        let (store, recovered) = BetStore::open(&path, 1).unwrap();
        let damaged = recovered.damaged.expect("a damaged tail");
        assert_eq!((recovered.bets, damaged.line), (2, 3), "{tail:?}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{good}{good}")
        );
        // Nothing lost: the tail is kept, byte for byte, beside the round.
        assert_eq!(std::fs::read(&damaged.saved_to).unwrap(), tail.as_bytes());
        assert_eq!(counts(&store, 1), (2, false));
        drop(store);
        std::fs::remove_file(&damaged.saved_to).unwrap();
        std::fs::remove_file(finishes::records_path(&path)).unwrap();
    }
}

#[test]
fn finish_records_must_fit_the_round() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    std::fs::write(&path, "1,A,B,1,2000-01-01,1\r\n").unwrap();
    let records = finishes::records_path(&path);
    let row = Bet {
        first_name: "A".into(),
        last_name: "B".into(),
        document: "1".into(),
        birthdate: "2000-01-01".into(),
        number: 1,
    };
    let digest = digest_of(std::slice::from_ref(&row));
    let other = Digest::of_nothing();
    for (text, wanted) in [
        ("agencies 4\n".to_string(), "SERVER_AGENCIES=4"),
        (
            format!("agencies 5\nfinished 1 2 {digest}\n"),
            "holds 1 of its bets",
        ),
        (
            format!("agencies 5\nfinished 1 1 {other}\n"),
            "digest e3b0c442, but its rows in the bets file have digest",
        ),
        (format!("agencies 5\nfinished 9 0 {other}\n"), "agency 9"),
        (
            "agencies 5\nfinished 1 1\n".to_string(),
            "protocol version 2",
        ),
        ("agencies 5\nwhatever\n".to_string(), "not `finished"),
    ] {
        std::fs::write(&records, &text).unwrap();
        let error = BetStore::open(&path, 5).err().expect("refused").to_string();
        assert!(error.contains(wanted), "{text:?}: {error}");
        assert!(error.contains("line "), "{error}");
        assert_eq!(std::fs::read_to_string(&records).unwrap(), text);
    }
    // A record cut short was never acknowledged: it is cut off.
    let whole = format!("agencies 5\nfinished 1 1 {digest}\n");
    std::fs::write(&records, format!("{whole}finis")).unwrap();
    let (bets_file, recovered) = BetStore::open(&path, 5).unwrap();
    assert_eq!(recovered.finished, HashMap::from([(1, (1, digest))]));
    assert_eq!(counts(&bets_file, 1), (1, true));
    assert_eq!(std::fs::read_to_string(&records).unwrap(), whole);
}

#[test]
fn a_second_store_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_first, path) = new_store(&dir, 1);
    let error = BetStore::open(&path, 1).err().expect("locked");
    assert!(matches!(error, StorageError::Locked { .. }), "{error}");
    assert!(error.to_string().contains("another server"));
}

#[test]
fn only_a_regular_file_is_a_bets_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let mut paths = vec![dir.path().to_path_buf(), PathBuf::from("/dev/null")];
    if made.is_ok_and(|s| s.success()) {
        paths.push(fifo);
    }
    for path in paths {
        let error = BetStore::open(&path, 1).err().expect("refused");
        assert!(
            matches!(error, StorageError::NotAFile { .. }),
            "{}: {error}",
            path.display()
        );
    }
}

#[test]
fn the_draw_reads_the_file_the_store_opened_even_if_the_path_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (bets_file, path) = new_store(&dir, 1);
    store(&bets_file, 1, 0, &bets(0..3));
    std::fs::rename(&path, dir.path().join("moved.csv")).unwrap();
    std::fs::write(&path, "1,X,Y,9,2000-01-01,1\r\n").unwrap();
    let mut rows = BetRows::between(&path, bets_file.reader().unwrap(), 0, u64::MAX);
    let mut documents = Vec::new();
    while let Some(row) = rows.next_row() {
        documents.push(row.unwrap().document().to_vec());
    }
    assert_eq!(documents, [b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
}

#[test]
fn rows_across_read_buffer_boundaries_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (bets_file, path) = new_store(&dir, 1);
    // About 2.5 read buffers of rows of varying length, so rows straddle the
    // boundaries at different offsets.
    let rows_total = 60_000u32;
    for start in (0..rows_total).step_by(1000) {
        let batch: Vec<Bet> = (start..start + 1000)
            .map(|i| {
                bet(
                    &"N".repeat(1 + (i % 7) as usize),
                    &i.to_string(),
                    (i % 10_000) as u16,
                )
            })
            .collect();
        store(&bets_file, 1, u64::from(start), &batch);
    }
    bets_file.close().unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 2 * READ_BUFFER_LEN as u64);
    let mut reader = BetRows::open(&path).unwrap();
    let mut seen = 0u32;
    while let Some(row) = reader.next_row() {
        let row = row.unwrap();
        assert_eq!(row.document(), seen.to_string().as_bytes());
        assert_eq!(u32::from(row.number), seen % 10_000);
        seen += 1;
    }
    assert_eq!(seen, rows_total);
}

#[test]
fn an_unterminated_tail_is_not_a_row_and_an_endless_row_stops_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    std::fs::write(&path, "1,A,B,1,2000-01-01,7574\r\n2,A,B,2,2000-01-01,7574").unwrap();
    let mut rows = BetRows::open(&path).unwrap();
    assert!(rows.next_row().unwrap().is_ok());
    assert!(rows.next_row().is_none());
    assert_eq!(rows.unterminated_tail(), 23);

    std::fs::write(&path, vec![b'1'; READ_BUFFER_LEN + 10]).unwrap();
    let mut rows = BetRows::open(&path).unwrap();
    let error = rows.next_row().unwrap().unwrap_err();
    assert!(error.to_string().contains("longer than"), "{error}");
    assert!(rows.next_row().is_none());
}

#[test]
fn concurrent_batches_are_whole_rows_and_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (bets_file, path) = new_store(&dir, 8);
    let bets_file = Arc::new(bets_file);
    let threads: Vec<_> = (1..=8u32)
        .map(|agency| {
            let bets_file = Arc::clone(&bets_file);
            std::thread::spawn(move || {
                for round in 0..20u16 {
                    let batch: Vec<Bet> = (0..30u16)
                        .map(|i| bet("Ana María", &format!("{agency}{round:02}{i:02}"), i))
                        .collect();
                    let first = u64::from(round) * 30;
                    assert!(matches!(
                        store(&bets_file, agency, first, &batch),
                        Append::Stored(_)
                    ));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let rows = read_all(&path);
    assert_eq!(rows.len(), 8 * 20 * 30);
    // Each batch's 30 rows are contiguous: batches never interleave.
    for chunk in rows.chunks(30) {
        assert!(chunk.iter().all(|r| r.0 == chunk[0].0));
        assert!(
            chunk
                .iter()
                .enumerate()
                .all(|(i, r)| usize::from(r.1.number) == i)
        );
    }
    for agency in 1..=8 {
        assert_eq!(counts(&bets_file, agency), (600, false));
    }
}

#[test]
fn a_bad_stored_row_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    std::fs::write(
        &path,
        "1,A,B,1,2000-01-01,1\r\nx,A,B,1,2000-01-01,1\r\n1,A,B\r\n",
    )
    .unwrap();
    let mut rows = BetRows::open(&path).unwrap();
    assert!(rows.next_row().unwrap().is_ok());
    assert!(matches!(
        rows.next_row(),
        Some(Err(StorageError::BadRow { row: 2, .. }))
    ));
    assert!(matches!(
        rows.next_row(),
        Some(Err(StorageError::BadRow { row: 3, .. }))
    ));
    assert!(rows.next_row().is_none());
}

#[test]
fn a_bets_file_deleted_or_replaced_while_open_stops_every_ack() {
    let dir = tempfile::tempdir().unwrap();
    let (bets_file, path) = new_store(&dir, 1);
    let Append::Stored(first) = store(&bets_file, 1, 0, &bets(0..2)) else {
        panic!("the first batch is stored");
    };
    // Acked: the file was in place once the batch was on disk (a look made
    // once per flush, which the next batch must not inherit).
    bets_file.sync(first).expect("the first batch is acked");
    // Replaced at its path: another file now stands where the round was.
    std::fs::rename(&path, dir.path().join("moved.csv")).unwrap();
    std::fs::write(&path, "").unwrap();
    let valid_bets = bets(2..3);
    let valid: Vec<ValidBet> = valid_bets.iter().map(Bet::valid).collect();
    let Ok(Append::Stored(appended)) = bets_file.append_batch(
        1,
        2,
        &valid,
        &body_of(&valid_bets),
        &mut RowBuffer::default(),
    ) else {
        panic!("the append itself goes to the open file");
    };
    let error = bets_file
        .sync(appended)
        .expect_err("no ack once the file is replaced");
    assert!(matches!(error, StorageError::Replaced { .. }), "{error}");
    assert!(error.to_string().contains("deleted or replaced"), "{error}");
    // And nothing more is taken.
    assert!(matches!(
        bets_file.append_batch(
            1,
            3,
            &valid,
            &body_of(&valid_bets),
            &mut RowBuffer::default()
        ),
        Err(StorageError::Replaced { .. })
    ));
}

#[test]
fn a_fifo_at_the_records_path_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let records = finishes::records_path(&path);
    let made = std::process::Command::new("mkfifo").arg(&records).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: mkfifo could not make a FIFO here");
        return;
    }
    std::fs::write(&path, "1,A,B,1,2000-01-01,1\r\n").unwrap();
    let error = BetStore::open(&path, 1).err().expect("refused, not hung");
    assert!(
        matches!(error, StorageError::RecordsNotAFile { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("FIFO"), "{error}");
}

#[test]
fn a_last_finish_record_cut_short_is_counted_in_what_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    std::fs::write(&path, "").unwrap();
    std::fs::write(
        finishes::records_path(&path),
        "agencies 1\nfinished 1 0 e3b0",
    )
    .unwrap();
    let (_store, recovered) = BetStore::open(&path, 1).unwrap();
    assert_eq!(
        recovered.records_cut_bytes,
        "finished 1 0 e3b0".len() as u64
    );
}
