//! kill -9 with thousands of pending events and unacked deliveries: after the
//! restart every event reaches every group (at least once), none early;
//! what was in flight comes again, and what was acked does not.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{event, now_ms, publish_ok, subscribe_req, Member, Server};

const EVENTS: i64 = 3_000;
/// Due times spread over this span after publishing.
const SPREAD_MS: i64 = 30_000;
const GROUPS: [&str; 2] = ["g1", "g2"];

/// What one group's member saw.
#[derive(Default)]
struct Seen {
    /// Message id → deliveries received (before or after the crash).
    deliveries: BTreeMap<String, u32>,
    /// Acks the server confirmed.
    acked: BTreeSet<String>,
    /// Delivered and deliberately left unacked.
    held: BTreeSet<String>,
    early: Vec<String>,
}

/// Consumes until the stream breaks (the server died) or `all` ids are seen;
/// leaves every fifth event unacked when `hold` is set.
async fn consume(mut m: Member, seen: Arc<Mutex<Seen>>, hold: bool) {
    loop {
        let Ok(Some(d)) = m.stream.message().await else {
            return;
        };
        let received = now_ms();
        let ev = d.event.clone().unwrap_or_default();
        let id = ev.message_id.clone();
        {
            let mut s = seen.lock().unwrap();
            *s.deliveries.entry(id.clone()).or_default() += 1;
            if received < ev.schedule_ts {
                s.early
                    .push(format!("{id} {} ms early", ev.schedule_ts - received));
            }
            if hold && d.offset % 5 == 0 {
                s.held.insert(id);
                continue;
            }
        }
        let req = chronos_proto::v1::AckRequest {
            consumer_group: m.group.clone(),
            items: vec![chronos_proto::v1::AckItem {
                delivery_id: d.delivery_id,
                ..Default::default()
            }],
            wait: true,
        };
        match m.client.ack(req).await {
            Ok(r) if r.get_ref().acked == 1 => {
                seen.lock().unwrap().acked.insert(id);
            }
            Ok(_) => {}
            Err(_) => return,
        }
        if seen.lock().unwrap().deliveries.len() == EVENTS as usize {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_and_in_flight_events_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]);
    let mut before = Vec::new();
    for g in GROUPS {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let m = Member::join(&server, subscribe_req(g, "crash", 200)).await;
        before.push((seen.clone(), tokio::spawn(consume(m, seen, true))));
    }
    let mut c = server.events().await;
    let start = now_ms() + 500;
    let ids: Vec<String> = (0..EVENTS).map(|i| format!("e{i}")).collect();
    for chunk in ids.chunks(500) {
        let events = chunk
            .iter()
            .map(|id| {
                let i: i64 = id[1..].parse().unwrap();
                chronos_proto::v1::Event {
                    schedule_ts: start + i * SPREAD_MS / EVENTS,
                    ..event("crash", id, b"")
                }
            })
            .collect();
        publish_ok(&mut c, events).await;
    }
    // Let a few hundred come due and be delivered (some acked, some held).
    let until = Instant::now() + Duration::from_secs(20);
    while before
        .iter()
        .any(|(s, _)| s.lock().unwrap().deliveries.len() < 300)
    {
        assert!(
            Instant::now() < until,
            "deliveries stalled before the crash"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    let mut seen_before = Vec::new();
    for (seen, task) in before {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        seen_before.push(seen);
    }

    let server = Server::start(&data, &[]);
    let mut after = Vec::new();
    for g in GROUPS {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let m = Member::join(&server, subscribe_req(g, "crash", 1000)).await;
        after.push((seen.clone(), tokio::spawn(consume(m, seen, false))));
    }
    let deadline = Duration::from_millis(SPREAD_MS as u64) + Duration::from_secs(30);
    let until = Instant::now() + deadline;
    for (g, (b, (a, _))) in GROUPS.iter().zip(seen_before.iter().zip(&after)) {
        loop {
            let union: BTreeSet<String> = {
                let (b, a) = (b.lock().unwrap(), a.lock().unwrap());
                b.deliveries
                    .keys()
                    .chain(a.deliveries.keys())
                    .cloned()
                    .collect()
            };
            if union.len() == EVENTS as usize {
                break;
            }
            assert!(
                Instant::now() < until,
                "group {g}: only {} of {EVENTS} delivered\n{}",
                union.len(),
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for (g, (b, (a, task))) in GROUPS.iter().zip(seen_before.iter().zip(after)) {
        task.abort();
        let (b, a) = (b.lock().unwrap(), a.lock().unwrap());
        assert!(
            b.acked.len() >= 100 && !b.held.is_empty(),
            "group {g}: too little before the crash"
        );
        assert!(
            b.early.is_empty() && a.early.is_empty(),
            "{g}: {:?} {:?}",
            b.early,
            a.early
        );
        let again: Vec<_> = b
            .acked
            .iter()
            .filter(|id| a.deliveries.contains_key(*id))
            .collect();
        assert!(
            again.is_empty(),
            "group {g}: acked before the crash, delivered again: {again:?}"
        );
        let lost: Vec<_> = b
            .held
            .iter()
            .filter(|id| !a.deliveries.contains_key(*id))
            .collect();
        assert!(
            lost.is_empty(),
            "group {g}: held unacked, never redelivered: {lost:?}"
        );
        let twice: Vec<_> = a.deliveries.iter().filter(|(_, &n)| n > 1).collect();
        assert!(
            twice.is_empty(),
            "group {g}: delivered twice after the restart: {twice:?}"
        );
    }
}
