//! A partition directory of the layout before the node's shared Raft log
//! (`wal/` was the Raft log, with `vote.json` beside it) opens: its applied
//! history stays replayable, an entry it had logged but not applied is
//! applied, and nothing is copied twice on the next open.

use std::path::Path;

use chronos_raftlog::{RaftLog, RaftLogOptions};
use chronos_wal::RecordHeader;

use super::tests::{next_publish, open_sm, publish_all, with_partition};
use crate::codec;
use crate::{ReplayQuery, ReplayRange};

async fn replayed_ids(p: &crate::Partition) -> Vec<String> {
    let mut rx = p.replay(
        ReplayQuery {
            range: ReplayRange::Offsets { from: 0, to: None },
            topic: Some("m".into()),
            ..ReplayQuery::default()
        },
        crate::ReplayReaders::new(1).try_reader().unwrap(),
    );
    let mut ids = Vec::new();
    while let Some(ev) = rx.recv().await {
        ids.push(ev.unwrap().record.message_id);
    }
    ids
}

/// Turns a partition written by this build into the older layout: the vote
/// goes back to `wal/vote.json` and the node log is removed.
fn make_old_layout(dir: &Path) {
    let log = RaftLog::open(&dir.join("raftlog"), RaftLogOptions::default()).unwrap();
    let vote = log.vote(0).expect("a vote");
    drop(log);
    std::fs::write(dir.join("wal").join("vote.json"), vote).unwrap();
    std::fs::remove_dir_all(dir.join("raftlog")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_of_the_older_layout_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    with_partition(&dir, |p| async move {
        publish_all(&p, "m", "later", 100, 3_600_000).await;
        publish_all(&p, "m", "now", 50, 0).await;
    })
    .await;
    make_old_layout(&dir);
    // An entry the old log held, fsynced but never applied (a crash came first).
    {
        let (_store, sm) = open_sm(&dir).await;
        let entry = next_publish(&sm, "m", "logged-not-applied");
        let header: RecordHeader = codec::header(&entry, sm.next_offset, 0);
        sm.history
            .wal()
            .append(
                &[(header, codec::encode_payload(&entry).as_slice())],
                Box::new(|_| {}),
            )
            .unwrap();
        sm.history.sync().unwrap();
    }
    assert!(dir.join("wal/vote.json").exists());

    for round in 0..2 {
        with_partition(&dir, |p| async move {
            let ids = replayed_ids(&p).await;
            assert_eq!(ids.len(), 151, "round {round}: {ids:?}");
            assert_eq!(ids.last().map(String::as_str), Some("logged-not-applied"));
            assert_eq!(p.status().pending, 100, "round {round}");
        })
        .await;
        assert!(!dir.join("wal/vote.json").exists());
        assert!(dir.join("wal/vote.json.migrated").exists());
    }
}
