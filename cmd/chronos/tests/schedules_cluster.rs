//! Recurring schedules in a 3-node cluster: kill -9 of the leader of a
//! schedule's partition while it fires every second. The next leader goes on
//! from the replicated schedule: every occurrence is stored once (no id
//! twice), a catch-up schedule has no gap, none is due before its time.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::schedule::Recurrence;
use chronos_proto::v1::{CreateScheduleRequest, MissedRuns, Schedule};
use common::cluster::{Cluster, Options};
use common::{now_ms, replay_all};

fn nominal_of(headers: &std::collections::HashMap<String, String>) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&headers["chronos-nominal-time"])
        .expect("nominal time")
        .timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_neither_loses_nor_repeats_an_occurrence() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Options::default());
    let mut c = EventServiceClient::connect(cluster.endpoint(1))
        .await
        .unwrap();
    let created = c
        .create_schedule(CreateScheduleRequest {
            schedule: Some(Schedule {
                schedule_id: "pulse".into(),
                topic: "pulses".into(),
                recurrence: Some(Recurrence::EveryMs(1000)),
                missed_runs: MissedRuns::CatchUp as i32,
                ..Default::default()
            }),
        })
        .await
        .expect("create_schedule")
        .into_inner()
        .schedule
        .unwrap();
    let partition = created.partition;
    let victim = cluster
        .leader_of(1, partition, &[1, 2, 3], Duration::from_secs(10))
        .await;
    let survivor = if victim == 1 { 2 } else { 1 };
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.kill9(victim);
    let killed = now_ms();
    let others: Vec<u64> = (1..=3).filter(|n| *n != victim).collect();
    cluster
        .leader_of(survivor, partition, &others, Duration::from_secs(15))
        .await;

    // Wait until the new leader has gone on storing occurrences for 3 s.
    let mut c = EventServiceClient::connect(cluster.endpoint(survivor))
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    let nominals = loop {
        let events = replay_all(&mut c, "pulses").await;
        let mut ids = BTreeSet::new();
        let mut nominals = Vec::new();
        for e in &events {
            let ev = e.event.clone().unwrap();
            assert!(
                ids.insert(ev.message_id.clone()),
                "{} stored twice",
                ev.message_id
            );
            let nominal = nominal_of(&ev.headers);
            assert!(e.due_ts >= nominal, "{} due before its time", ev.message_id);
            nominals.push(nominal);
        }
        nominals.sort_unstable();
        if nominals.last().is_some_and(|n| *n > killed + 5_000) {
            break nominals;
        }
        assert!(
            Instant::now() < until,
            "no occurrences after the failover: {nominals:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(nominals[0] < killed, "nothing stored before the kill");
    for pair in nominals.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            1000,
            "a gap across the failover: {nominals:?}"
        );
    }
}
