//! Redrives whose dead letters went meanwhile: the numbers they were given
//! hold nothing, and no group's lag may count them.

use chronos_proto::internal::{
    DeadLetterRecord, FiredRecord, GroupCommand, RedriveCommand, StartKind, TopicState,
};
use openraft::EntryPayload;
use prost::Message;

use super::tests::open_sm;
use crate::groups::lag;
use crate::types::{Command, Entry};

fn entry(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: crate::codec::log_id(1, 1, index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn redrive(seqs: Vec<u64>, first_seq: u64) -> Command {
    Command::redrive(RedriveCommand {
        topic: "t".into(),
        group: "g".into(),
        seqs,
        now_ts: crate::wall_ms(),
        first_seq: Some(first_seq),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_a_redrive_left_unused_are_no_groups_lag() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, mut sm) = open_sm(tmp.path()).await;
    let group = |name: &str| {
        Command::group(GroupCommand {
            topic: "t".into(),
            group: name.into(),
            start: StartKind::StartEarliest as i32,
            now_ts: crate::wall_ms(),
            ..Default::default()
        })
    };
    sm.apply_entries(vec![entry(1, group("g")), entry(2, group("h"))])
        .unwrap();
    // One dead letter of "g", as a delivery that ran out of attempts leaves it.
    let fired = FiredRecord {
        offset: 7,
        ..Default::default()
    };
    let dead = DeadLetterRecord {
        fired: fired.encode_to_vec().into(),
        attempts: 5,
        ..Default::default()
    };
    let mut batch = store.batch();
    batch.put_dlq("t", "g", 40, &dead.encode_to_vec());
    batch.commit().unwrap();

    // Numbers 0..3: the dead letter 40 takes 0; 41 and 42 are not there.
    sm.apply_entries(vec![entry(3, redrive(vec![40, 41, 42], 0))])
        .unwrap();
    let topic = || TopicState::decode(store.get_topic("t").unwrap().unwrap().as_slice()).unwrap();
    assert_eq!(topic().next_fire_seq, 3);
    assert_eq!(lag(&topic(), "g", 0), 1, "only the copy redriven is g's");
    assert_eq!(
        lag(&topic(), "h", 0),
        0,
        "the copy is g's; the rest nobody's"
    );
    assert_eq!(lag(&topic(), "g", 1), 0);

    // The same dead letter again (a second redrive of it at once): gone, so
    // its number 3 holds nothing.
    sm.apply_entries(vec![entry(4, redrive(vec![40], 3))])
        .unwrap();
    assert_eq!(topic().next_fire_seq, 4);
    assert_eq!(lag(&topic(), "g", 1), 0);
    assert_eq!(lag(&topic(), "h", 0), 0);

    // A redrive for a group deleted meanwhile numbers nothing either.
    let delete = Command::group(GroupCommand {
        topic: "t".into(),
        group: "g".into(),
        delete: true,
        now_ts: crate::wall_ms(),
        ..Default::default()
    });
    sm.apply_entries(vec![entry(5, delete), entry(6, redrive(vec![40], 4))])
        .unwrap();
    assert_eq!(topic().next_fire_seq, 5);
    assert_eq!(lag(&topic(), "h", 0), 0);
}
