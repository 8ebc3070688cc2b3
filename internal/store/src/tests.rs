use super::*;

fn entry(offset: u64, expiry_ms: i64) -> IdEntry {
    IdEntry {
        offset,
        due_ts: 1_000,
        expiry_ms,
        state: IdState::Pending,
    }
}

#[test]
fn id_entries_round_trip_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
    let mut b = store.batch();
    b.put_id("orders", "m-1", &entry(7, 5_000));
    b.put_meta("applied", b"x");
    b.commit().unwrap();

    assert_eq!(
        store.get_id("orders", "m-1", 4_999).unwrap(),
        Some(entry(7, 5_000))
    );
    assert_eq!(
        store.get_id("orders", "m-1", 5_000).unwrap(),
        None,
        "expired at expiry_ms"
    );
    assert_eq!(store.get_id("orders", "m-2", 0).unwrap(), None);
    assert_eq!(
        store.get_id("order", "sm-1", 0).unwrap(),
        None,
        "topic/id split is unambiguous"
    );
    assert_eq!(
        store.get_meta("applied").unwrap().as_deref(),
        Some(&b"x"[..])
    );
}

#[test]
fn pending_is_due_ordered_and_survives_flush_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
        let mut b = store.batch();
        b.put_pending("t", 3_000, 1, b"late");
        b.put_pending("t", 1_000, 9, b"early");
        b.put_pending("t", 2_000, 2, b"mid");
        b.commit().unwrap();
        assert_eq!(store.first_pending_due().unwrap(), Some(1_000));
        store.flush().unwrap();
    }
    let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
    assert_eq!(store.first_pending_due().unwrap(), Some(1_000));
}

#[test]
fn unflushed_writes_are_not_durable_but_flushed_ones_are() {
    // RocksDB's WAL is off: this is the property the Raft-log replay relies on.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
        let mut b = store.batch();
        b.put_meta("applied", b"1");
        b.commit().unwrap();
        store.flush().unwrap();
        let mut b = store.batch();
        b.put_meta("applied", b"2");
        b.commit().unwrap();
        // Dropping without flush: RocksDB flushes memtables on a clean close only
        // when the WAL is on; with it off the last write may or may not survive,
        // but the flushed one must.
    }
    let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
    let applied = store.get_meta("applied").unwrap().unwrap();
    assert!(applied == b"1" || applied == b"2", "{applied:?}");
}

#[test]
fn checkpoint_opens_as_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), &StoreResources::default()).unwrap();
    let mut b = store.batch();
    b.put_id("t", "a", &entry(1, i64::MAX));
    b.commit().unwrap();
    let cp = dir.path().join("cp");
    store.checkpoint(&cp).unwrap();
    let copy = Store::open(&cp, &StoreResources::default()).unwrap();
    assert_eq!(copy.get_id("t", "a", 0).unwrap(), Some(entry(1, i64::MAX)));
}

#[test]
fn corrupt_id_entry_is_an_error_not_a_panic() {
    assert!(IdEntry::decode(b"short").is_err());
    let mut raw = entry(1, 2).encode();
    raw[24] = 99;
    assert!(IdEntry::decode(&raw).is_err());
}

#[test]
fn pending_scans_resume_after_a_key_and_stop_at_a_due_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
    let mut b = store.batch();
    for (due, off) in [(10, 1), (10, 2), (20, 3), (30, 4), (40, 5)] {
        b.put_pending("t", due, off, b"e");
    }
    b.commit().unwrap();
    assert_eq!(
        store.scan_pending(None, 20, 10).unwrap(),
        vec![(10, 1), (10, 2), (20, 3)]
    );
    assert_eq!(
        store.scan_pending(Some((10, 1)), 30, 2).unwrap(),
        vec![(10, 2), (20, 3)]
    );
    assert_eq!(
        store.scan_pending(Some((20, 3)), 100, 10).unwrap(),
        vec![(30, 4), (40, 5)]
    );
    let mut b = store.batch();
    b.delete_pending("t", 30, 4);
    b.commit().unwrap();
    assert_eq!(
        store.scan_pending(Some((20, 3)), 100, 10).unwrap(),
        vec![(40, 5)]
    );
    assert_eq!(
        store.get_pending(40, 5).unwrap().as_deref(),
        Some(&b"e"[..])
    );
    assert_eq!(store.get_pending(30, 4).unwrap(), None);
}

#[test]
fn fire_logs_are_per_topic_and_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
    let mut b = store.batch();
    b.put_fired("a", 1, b"a1");
    b.put_fired("a", 0, b"a0");
    b.put_fired("ab", 0, b"ab0");
    b.put_fired("a", 300, b"a300");
    b.put_topic("a", b"state");
    b.commit().unwrap();
    let a: Vec<(u64, Vec<u8>)> = store.scan_fired("a", 0, 10).unwrap();
    assert_eq!(
        a,
        vec![
            (0, b"a0".to_vec()),
            (1, b"a1".to_vec()),
            (300, b"a300".to_vec())
        ]
    );
    assert_eq!(store.scan_fired("a", 2, 10).unwrap().len(), 1);
    assert_eq!(
        store.scan_fired("ab", 0, 10).unwrap(),
        vec![(0, b"ab0".to_vec())]
    );
    assert_eq!(
        store.get_topic("a").unwrap().as_deref(),
        Some(&b"state"[..])
    );
}

#[test]
fn pending_runs_read_wanted_keys_and_skip_gone_or_unwanted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
    let mut b = store.batch();
    for (due, off) in [(10, 1), (10, 2), (20, 3), (30, 4), (40, 5)] {
        b.put_pending("t", due, off, format!("e{off}").as_bytes());
    }
    b.commit().unwrap();
    let got = |keys: &[(i64, u64)]| -> Vec<Option<String>> {
        store
            .get_pending_run(keys)
            .unwrap()
            .into_iter()
            .map(|v| v.map(|v| String::from_utf8(v).unwrap()))
            .collect()
    };
    // (10, 2) and (30, 4) are stored but not asked for; (15, 9) and (50, 6) are not stored.
    assert_eq!(
        got(&[(10, 1), (15, 9), (20, 3), (40, 5), (50, 6)]),
        vec![
            Some("e1".into()),
            None,
            Some("e3".into()),
            Some("e5".into()),
            None
        ]
    );
    assert_eq!(got(&[(0, 0)]), vec![None]);
    assert_eq!(got(&[]), Vec::<Option<String>>::new());
    assert_eq!(got(&[(40, 5)]), vec![Some("e5".into())]);
}

#[test]
fn compaction_drops_expired_ids_and_keeps_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
    let mut b = store.batch();
    b.put_id("orders", "old", &entry(1, 1_000));
    b.put_id("orders", "live", &entry(2, i64::MAX));
    b.commit().unwrap();
    store.flush().unwrap();
    let ids = store.cf(CF_IDS);
    store.db.compact_range_cf(ids, None::<&[u8]>, None::<&[u8]>);
    let raw = |m: &str| store.db.get_cf(ids, id_key("orders", m)).unwrap();
    assert!(raw("old").is_none(), "expired entry survived compaction");
    assert_eq!(
        store.get_id("orders", "live", 0).unwrap(),
        Some(entry(2, i64::MAX))
    );
}

#[test]
fn pending_events_in_blob_files_read_back_after_flush_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![7u8; 4 * PENDING_MIN_BLOB_BYTES as usize];
    {
        let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
        for round in 0..3u64 {
            let mut b = store.batch();
            for i in 0..100u64 {
                let offset = round * 100 + i;
                b.put_pending("t", 1_000 + offset as i64, offset, &big);
                b.put_pending("t", 1_000 + offset as i64, 10_000 + offset, b"small");
            }
            b.commit().unwrap();
            store.flush().unwrap();
        }
        let pending = store.cf(CF_PENDING);
        store
            .db
            .compact_range_cf(pending, None::<&[u8]>, None::<&[u8]>);
    }
    let blobs = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "blob")
        })
        .count();
    assert!(blobs > 0, "large pending values were not put in blob files");
    let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
    let pending = store.cf(CF_PENDING);
    let mut seen = 0;
    for item in store.db.iterator_cf(pending, rocksdb::IteratorMode::Start) {
        let (key, value) = item.unwrap();
        let offset = u64::from_be_bytes(key[8..16].try_into().unwrap());
        let want: &[u8] = if offset >= 10_000 { b"small" } else { &big };
        assert_eq!(&value[..], want, "offset {offset}");
        seen += 1;
    }
    assert_eq!(seen, 600);
}

#[test]
fn due_counts_follow_pending_through_merges_compaction_and_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
    let mut b = store.batch();
    for offset in 0..10u64 {
        // Two seconds of "a" (5 each), one event of "b" in the second one.
        b.put_pending("a", 10_000 + (offset as i64 / 5) * 1_000 + 7, offset, b"a");
    }
    b.put_pending("b", 11_500, 10, b"b");
    b.commit().unwrap();
    assert_eq!(
        store.due_counts("a", 0, i64::MAX).unwrap(),
        vec![(10_000, 5), (11_000, 5)]
    );
    assert_eq!(
        store.due_counts("a", 11_000, 12_000).unwrap(),
        vec![(11_000, 5)]
    );
    assert_eq!(
        store.due_counts("b", 0, i64::MAX).unwrap(),
        vec![(11_000, 1)]
    );
    assert_eq!(store.due_counts("", 0, i64::MAX).unwrap(), vec![]);

    // Deletes in later batches merge down; a second that empties is merged
    // to 0 by one compaction and dropped by the next that reads it.
    let mut b = store.batch();
    for offset in 0..5u64 {
        b.delete_pending("a", 10_007, offset);
    }
    b.delete_pending("a", 11_007, 5);
    b.commit().unwrap();
    store.flush().unwrap();
    for _ in 0..2 {
        store
            .db
            .compact_range_cf(store.cf(CF_DUE_COUNTS), None::<&[u8]>, None::<&[u8]>);
    }
    assert_eq!(
        store.due_counts("a", 0, i64::MAX).unwrap(),
        vec![(11_000, 4)]
    );
    let raw = store.dump_cf(CF_DUE_COUNTS).unwrap();
    assert_eq!(raw.len(), 2, "the emptied second is dropped: {raw:?}");

    // A store from before the counts: rebuilt from `pending` alone.
    assert!(!store.due_counts_built().unwrap());
    let counted = store
        .rebuild_due_counts(|raw| Ok::<_, String>(String::from_utf8_lossy(raw).into_owned()))
        .unwrap();
    assert_eq!(counted, 5);
    assert!(store.due_counts_built().unwrap());
    assert_eq!(
        store.due_counts("a", 0, i64::MAX).unwrap(),
        vec![(11_000, 4)]
    );
    assert_eq!(
        store.due_counts("b", 0, i64::MAX).unwrap(),
        vec![(11_000, 1)]
    );
}

#[test]
fn fire_places_are_found_by_offset_with_redriven_copies_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
    let mut b = store.batch();
    b.put_fired_at(7, None, 40, i64::MAX);
    b.put_fired_at(7, Some("billing"), 95, i64::MAX);
    b.put_fired_at(8, None, 41, 1_000);
    b.put_fired_at(6, None, 39, i64::MAX);
    b.commit().unwrap();
    let place = |group: Option<&str>, fire_seq| FiredAt {
        group: group.map(str::to_string),
        fire_seq,
    };
    assert_eq!(
        store.fired_at(7).unwrap(),
        vec![place(None, 40), place(Some("billing"), 95)]
    );
    assert_eq!(store.fired_at(8).unwrap(), vec![place(None, 41)]);
    assert_eq!(store.fired_at(9).unwrap(), vec![]);
    store.flush().unwrap();
    store
        .db
        .compact_range_cf(store.cf(CF_FIRED_AT), None::<&[u8]>, None::<&[u8]>);
    assert_eq!(store.fired_at(8).unwrap(), vec![], "expired place survived");
    assert_eq!(store.fired_at(6).unwrap(), vec![place(None, 39)]);
    assert_eq!(store.fired_at(7).unwrap().len(), 2);
}

#[test]
fn pending_keys_are_read_without_their_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![7u8; 4 * PENDING_MIN_BLOB_BYTES as usize];
    {
        let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
        let mut b = store.batch();
        for offset in 0..100u64 {
            b.put_pending("t", 1_000 + offset as i64, offset, &big);
        }
        b.put_pending("t", 1_050, 500, b"small");
        b.commit().unwrap();
        store.flush().unwrap();
        let mut b = store.batch();
        b.delete_pending("t", 1_010, 10);
        b.commit().unwrap();
    }
    let store = Store::open(dir.path(), &StoreResources::default()).unwrap();
    // Without the blob files, any read of a large value fails: the scans
    // below succeed only because they never load one.
    let away = tempfile::tempdir().unwrap();
    let mut moved = 0;
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "blob") {
            std::fs::rename(&path, away.path().join(path.file_name().unwrap())).unwrap();
            moved += 1;
        }
    }
    assert!(moved > 0, "no blob files were written");
    assert!(
        store.get_pending(1_000, 0).is_err(),
        "a large value was readable"
    );

    let keys = store.scan_pending(None, 1_020, 1_000).unwrap();
    let want: Vec<(i64, u64)> = (0..=20u64)
        .filter(|&o| o != 10)
        .map(|o| (1_000 + o as i64, o))
        .collect();
    assert_eq!(keys, want);
    assert_eq!(
        store.scan_pending(Some((1_049, 49)), 1_050, 10).unwrap(),
        vec![(1_050, 50), (1_050, 500)]
    );
    assert_eq!(
        store
            .pending_present(&[
                (999, 0),
                (1_000, 0),
                (1_010, 10),
                (1_050, 500),
                (1_099, 99),
                (1_200, 1)
            ])
            .unwrap(),
        vec![false, true, false, true, true, false]
    );
    assert_eq!(store.pending_present(&[]).unwrap(), Vec::<bool>::new());
}
