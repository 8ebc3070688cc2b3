//! Cancels applied straight to a state machine: many in one entry are
//! decided in order, and a single `Cancel` of an older log still applies.

use chronos_proto::internal::{command, CancelCommand, EventRecord, PublishCommand, TopicState};
use openraft::EntryPayload;
use prost::Message;

use super::tests::open_sm;
use crate::types::{CancelOutcome, Command, Entry};

fn entry(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: crate::codec::log_id(1, 1, index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn cancel(id: &str) -> CancelCommand {
    CancelCommand {
        topic: "t".into(),
        message_id: id.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_in_one_entry_are_decided_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, mut sm) = open_sm(tmp.path()).await;
    let now = crate::wall_ms();
    let due_ts = now + 3_600_000;
    let record = |id: &str| {
        EventRecord {
            topic: "t".into(),
            message_id: id.into(),
            due_ts,
            schedule_ts: due_ts,
            ..Default::default()
        }
        .encode_to_vec()
        .into()
    };
    let publish = Command::publish(PublishCommand {
        publish_ts: now,
        first_offset: 0,
        events: vec![record("a"), record("b"), record("c")],
        dedup_expiry_ts: due_ts,
        ..Default::default()
    });
    let cancels = Command::cancels(vec![cancel("a"), cancel("a"), cancel("x"), cancel("b")]);
    let applied = sm
        .apply_entries(vec![entry(1, publish), entry(2, cancels)])
        .unwrap();
    assert_eq!(
        applied[1].cancels,
        [
            CancelOutcome::Cancelled { offset: 0, due_ts },
            CancelOutcome::AlreadyCancelled { offset: 0 },
            CancelOutcome::NotFound,
            CancelOutcome::Cancelled { offset: 1, due_ts },
        ]
    );
    let pending = || {
        TopicState::decode(store.get_topic("t").unwrap().unwrap().as_slice())
            .unwrap()
            .pending
    };
    assert_eq!(pending(), 1, "each cancelled event counted out once");

    // In a later entry the store has them: a repeat finds it cancelled.
    let again = Command::cancels(vec![cancel("b")]);
    let applied = sm.apply_entries(vec![entry(3, again)]).unwrap();
    assert_eq!(
        applied[0].cancels,
        [CancelOutcome::AlreadyCancelled { offset: 1 }]
    );

    // A log written before `Cancels` holds single `Cancel`s: still applied.
    let old = Command::from(chronos_proto::internal::Command {
        kind: Some(command::Kind::Cancel(cancel("c"))),
    });
    let applied = sm.apply_entries(vec![entry(4, old)]).unwrap();
    assert_eq!(
        applied[0].cancels,
        [CancelOutcome::Cancelled { offset: 2, due_ts }]
    );
    assert_eq!(pending(), 0);
}
