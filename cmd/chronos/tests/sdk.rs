//! The Rust SDK (`chronos-client`) against a real `chronos serve` process:
//! delayed publish, consumer credit / acks / nacks,
//! reconnect after a server restart, replay, admin helpers, typed errors.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chronos_client::proto::{self, CancelStatus};
use chronos_client::{
    Client, Consumer, ConsumerOptions, Delivery, Error, EventBuilder, ProducerOptions, Replay,
};
use common::seen::consumer;
use common::{now_ms, Server};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(20);

/// The next delivery, or None if none arrives within `wait`.
async fn next_within(c: &mut Consumer, wait: Duration) -> Option<Delivery> {
    match tokio::time::timeout(wait, c.next()).await {
        Ok(Some(d)) => Some(d.expect("delivery")),
        Ok(None) => panic!("consumer stream ended"),
        Err(_) => None,
    }
}

async fn next(c: &mut Consumer) -> Delivery {
    next_within(c, WAIT)
        .await
        .unwrap_or_else(|| panic!("no delivery within {WAIT:?}"))
}

/// Waits until the group has `n` deliveries in flight.
async fn wait_inflight(client: &Client, group: &str, topic: &str, n: u64) {
    let until = Instant::now() + WAIT;
    loop {
        let g = client.describe_group(group, topic).await.expect("describe");
        if g.inflight == n {
            return;
        }
        assert!(
            Instant::now() < until,
            "inflight {} never reached {n}",
            g.inflight
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn publish_after_is_never_delivered_early() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let client = Client::connect([server.endpoint()]).await.unwrap();
    let mut c = consumer(&client, "g", "later", 8).await;
    let producer = client.producer(ProducerOptions::default());
    let asked = now_ms();
    let published = producer
        .publish_after("later", "soon", "x", Duration::from_secs(2))
        .await
        .unwrap();
    assert!(published.due_ts >= asked + 2000, "{published:?}");
    // A single publish, due now, arrives first.
    let now = client
        .publish(EventBuilder::new("later", "now").build())
        .await
        .unwrap();
    let first = next(&mut c).await;
    assert_eq!(first.event.message_id, "now");
    assert_eq!(first.offset, now.offset);
    c.ack(&first).await.unwrap();

    let d = next(&mut c).await;
    let received = now_ms();
    assert_eq!(d.event.message_id, "soon");
    assert_eq!(d.due_ts, published.due_ts);
    assert!(
        received >= published.due_ts,
        "received at {received}, due {}",
        published.due_ts
    );
    assert_eq!(&d.event.payload[..], b"x");
    c.ack(&d).await.unwrap();
    c.flush().await.unwrap();
    wait_inflight(&client, "g", "later", 0).await;
}

/// A member with a window of one gets the next event as soon as it acks the
/// last, however long the ack linger: a settlement that frees half the window
/// goes out at once (with the linger alone, one event per 30 s).
#[tokio::test]
async fn a_window_of_one_is_not_held_by_the_ack_linger() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let client = Client::connect([server.endpoint()]).await.unwrap();
    let total = 20;
    let producer = client.producer(ProducerOptions::default());
    for i in 0..total {
        producer
            .publish(EventBuilder::new("one-by-one", format!("e-{i}")))
            .await
            .unwrap();
    }
    let mut c = client
        .consumer(ConsumerOptions {
            group: "g".into(),
            topic: "one-by-one".into(),
            max_inflight: 1,
            start: chronos_client::Start::Earliest,
            ack_linger: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut seen = HashSet::new();
    while seen.len() < total {
        let d = next_within(&mut c, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("stalled after {} of {total}", seen.len()));
        assert!(seen.insert(d.event.message_id.clone()), "twice: {d:?}");
        c.ack(&d).await.unwrap();
    }
}

#[tokio::test]
async fn consumer_credits_acks_and_nacks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let client = Client::connect([server.endpoint()]).await.unwrap();
    let producer = client.producer(ProducerOptions::default());
    let total = 10;
    for i in 0..total {
        producer
            .publish(EventBuilder::new("credit", format!("e-{i}")))
            .await
            .unwrap();
    }
    let max_inflight = 3;
    let mut c = consumer(&client, "g", "credit", max_inflight).await;

    // Without acks: exactly max_inflight arrive, then nothing.
    wait_inflight(&client, "g", "credit", u64::from(max_inflight)).await;
    let mut held = Vec::new();
    while let Some(d) = next_within(&mut c, Duration::from_millis(700)).await {
        held.push(d);
    }
    assert_eq!(held.len(), max_inflight as usize, "{held:?}");
    // A grant lets exactly that many more through.
    c.grant(2).await.unwrap();
    wait_inflight(&client, "g", "credit", u64::from(max_inflight) + 2).await;
    while let Some(d) = next_within(&mut c, Duration::from_millis(700)).await {
        held.push(d);
    }
    assert_eq!(held.len(), max_inflight as usize + 2, "{held:?}");

    // Nack one with a delay: it comes back as attempt 2, not before the delay.
    let nacked = held.pop().unwrap();
    let nacked_at = Instant::now();
    c.nack(&nacked, Some(Duration::from_millis(500)))
        .await
        .unwrap();
    // Ack the rest as they come; every event arrives once, the nacked one twice.
    let mut seen: HashSet<String> = held.iter().map(|d| d.event.message_id.clone()).collect();
    seen.insert(nacked.event.message_id.clone());
    for d in held.drain(..) {
        c.ack(&d).await.unwrap();
    }
    let mut redelivered = None;
    while seen.len() < total || redelivered.is_none() {
        let Some(d) = next_within(&mut c, WAIT).await else {
            let g = client.describe_group("g", "credit").await.unwrap();
            panic!("stuck: seen {seen:?}, redelivered {redelivered:?}, group {g:?}");
        };
        if d.event.message_id == nacked.event.message_id && d.attempt == 2 {
            assert!(nacked_at.elapsed() >= Duration::from_millis(450));
            redelivered = Some(d.clone());
        } else {
            assert_eq!(d.attempt, 1, "{d:?}");
            assert!(seen.insert(d.event.message_id.clone()), "twice: {d:?}");
        }
        c.ack(&d).await.unwrap();
    }
    c.flush().await.unwrap();
    wait_inflight(&client, "g", "credit", 0).await;
    assert!(next_within(&mut c, Duration::from_millis(300))
        .await
        .is_none());
    let g = client.describe_group("g", "credit").await.unwrap();
    assert_eq!((g.members, g.lag), (1, 0));
}

/// A TCP forwarder on a fixed loopback port to whatever address `target`
/// holds (the server's port changes when it restarts). Dropping it closes
/// the port and every connection through it. While `mute` is set, what the
/// server sends back is dropped: requests arrive, answers never do.
struct Proxy {
    addr: String,
    target: Arc<Mutex<String>>,
    mute: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let target = Arc::new(Mutex::new(target.to_string()));
        let mute = Arc::new(AtomicBool::new(false));
        let (to, muted) = (target.clone(), mute.clone());
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts the connections.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let to = to.lock().unwrap().clone();
                let muted = muted.clone();
                conns.spawn(async move {
                    let Ok(outbound) = TcpStream::connect(to).await else {
                        return;
                    };
                    let (mut client_rx, mut client_tx) = inbound.into_split();
                    let (mut server_rx, mut server_tx) = outbound.into_split();
                    let up = tokio::io::copy(&mut client_rx, &mut server_tx);
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match server_rx.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) if !muted.load(Ordering::SeqCst) => {
                                    if client_tx.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(_) => {}
                            }
                        }
                    };
                    tokio::select! { _ = up => {}, () = down => {} }
                });
            }
        });
        Proxy {
            addr,
            target,
            mute,
            task,
        }
    }

    fn retarget(&self, to: &str) {
        *self.target.lock().unwrap() = to.to_string();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn client_fails_over_to_the_next_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let proxy = Proxy::start(&server.grpc).await;
    let client = Client::connect([proxy.addr.clone(), server.endpoint()])
        .await
        .unwrap();
    let mut c = consumer(&client, "g", "failover", 8).await;
    client
        .publish(EventBuilder::new("failover", "one").build())
        .await
        .unwrap();
    assert_eq!(next(&mut c).await.event.message_id, "one");
    // The first endpoint goes away for good: calls and the consumer move on.
    drop(proxy);
    let p = client
        .publish(EventBuilder::new("failover", "two").build())
        .await
        .unwrap();
    assert!(!p.duplicate);
    let d = next(&mut c).await;
    // "one" was never acked, so the new subscription gets it again first or after.
    let mut got = vec![d];
    while got.iter().all(|d| d.event.message_id != "two") {
        got.push(next(&mut c).await);
    }
    assert!(
        got.iter()
            .all(|d| d.event.message_id != "one" || d.attempt == 2),
        "{got:?}"
    );
}

#[tokio::test]
async fn consumer_resubscribes_after_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]);
    let proxy = Proxy::start(&server.grpc).await;
    let client = Client::connect([proxy.addr.clone()]).await.unwrap();
    let mut c = consumer(&client, "g", "restart", 8).await;

    client
        .publish(EventBuilder::new("restart", "before").build())
        .await
        .unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.event.message_id, "before");
    c.ack(&d).await.unwrap();
    c.flush().await.unwrap();

    server.kill9();
    let server = Server::start(&data, &[]);
    proxy.retarget(&server.grpc);
    // The client retries the publish; the consumer subscribes again by itself.
    client
        .publish(EventBuilder::new("restart", "after").build())
        .await
        .unwrap();
    let d = next(&mut c).await;
    assert_eq!(
        d.event.message_id, "after",
        "an acked event came back: {d:?}"
    );
    c.ack(&d).await.unwrap();
    c.flush().await.unwrap();
    wait_inflight(&client, "g", "restart", 0).await;
    // The new server knows the member that subscribed again.
    let g = client.describe_group("g", "restart").await.unwrap();
    assert_eq!(g.members, 1, "{g:?}");
}

#[tokio::test]
async fn replay_streams_by_offset_time_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let client = Client::connect([server.endpoint()]).await.unwrap();
    let start = SystemTime::now() - Duration::from_secs(1);
    let due = SystemTime::now() + Duration::from_secs(600);
    for i in 0..6 {
        let mut ev = EventBuilder::new("replayed", format!("r-{i}")).due_at(due);
        if i < 4 {
            ev = ev.key("k");
        }
        client.publish(ev.build()).await.unwrap();
    }
    let collect = |q: Replay| {
        let client = client.clone();
        async move {
            let mut ids: Vec<String> = client
                .replay(q)
                .await
                .unwrap()
                .map(|r| r.expect("replay").event.message_id)
                .collect()
                .await;
            ids.sort();
            ids
        }
    };
    let all: Vec<String> = (0..6).map(|i| format!("r-{i}")).collect();
    assert_eq!(collect(Replay::offsets(0..0).topic("replayed")).await, all);
    assert_eq!(
        collect(Replay::offsets(0..0).topic("replayed").key("k")).await,
        all[..4]
    );
    assert_eq!(
        collect(Replay::published(start, None).topic("replayed")).await,
        all
    );
    let due_window = Replay::due(
        due - Duration::from_secs(1),
        Some(due + Duration::from_secs(1)),
    );
    assert_eq!(collect(due_window.topic("replayed")).await, all);
    let before = Replay::published(start - Duration::from_secs(60), Some(start));
    assert!(collect(before.topic("replayed")).await.is_empty());
}

#[tokio::test]
async fn errors_are_typed_and_dead_letters_redrive() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[("CHRONOS_DELIVERY__MAX_ATTEMPTS", "1")],
    );
    // An unreachable first endpoint is skipped.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let client = Client::connect([dead_addr.clone(), server.endpoint()])
        .await
        .unwrap();
    assert!(matches!(
        Client::connect([dead_addr]).await,
        Err(Error::Transport { .. })
    ));

    let err = client
        .publish(EventBuilder::new("__x", "m").build())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { message, field: Some(f) }
            if message.starts_with("event.topic") && f == "event.topic"),
        "{err:?}"
    );
    let err = client.cancel("t", "nope", "").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let err = client
        .consumer(ConsumerOptions {
            group: "g".into(),
            topic: "bad topic".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { message, field: Some(f) }
            if message.starts_with("subscribe.topic") && f == "subscribe.topic"),
        "{err:?}"
    );

    // Cancel a pending event; a fired one cannot be.
    let later = SystemTime::now() + Duration::from_secs(600);
    client
        .publish(
            EventBuilder::new("t", "later")
                .key("k")
                .due_at(later)
                .build(),
        )
        .await
        .unwrap();
    let topics = client.list_topics().await.unwrap();
    assert!(
        topics.iter().any(|t| t.name == "t" && t.pending == 1),
        "{topics:?}"
    );
    client.cancel("t", "later", "k").await.unwrap();

    let mut c = consumer(&client, "g", "t", 4).await;
    client
        .publish(EventBuilder::new("t", "now").build())
        .await
        .unwrap();
    let d = next(&mut c).await;
    let err = client.cancel("t", "now", "").await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition { .. }), "{err:?}");

    // Many in one call: one result per cancel, in order, the unknown and
    // the fired ones among them; bad input named by its place.
    for id in ["b1", "b2"] {
        let ev = EventBuilder::new("t", id).key("k").due_at(later).build();
        client.publish(ev).await.unwrap();
    }
    let cancel = |id: &str, key: &str| proto::CancelRequest {
        topic: "t".into(),
        message_id: id.into(),
        key: key.into(),
    };
    let results = client
        .cancel_batch(vec![
            cancel("b1", "k"),
            cancel("later", "k"),
            cancel("nope", ""),
            cancel("now", ""),
            cancel("b2", "k"),
            cancel("b1", "k"),
        ])
        .await
        .unwrap();
    let got: Vec<(&str, CancelStatus)> = (results.iter())
        .map(|r| (r.message_id.as_str(), r.status()))
        .collect();
    assert_eq!(
        got,
        [
            ("b1", CancelStatus::Cancelled),
            ("later", CancelStatus::AlreadyCancelled),
            ("nope", CancelStatus::NotFound),
            ("now", CancelStatus::AlreadyFired),
            ("b2", CancelStatus::Cancelled),
            ("b1", CancelStatus::AlreadyCancelled),
        ]
    );
    assert_eq!(results[0].offset, results[5].offset);
    let topics = client.list_topics().await.unwrap();
    assert!(
        topics.iter().any(|t| t.name == "t" && t.pending == 0),
        "{topics:?}"
    );
    let err = client.cancel_batch(vec![]).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { field: Some(f), .. } if f == "cancels"),
        "{err:?}"
    );
    let err = (client.cancel_batch(vec![cancel("b1", ""), proto::CancelRequest::default()]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { field: Some(f), .. } if f == "cancels[1].topic"),
        "{err:?}"
    );

    // max_attempts 1: a nack makes a dead letter; redrive brings it back.
    c.nack(&d, None).await.unwrap();
    c.flush().await.unwrap();
    let dead = client.list_dead_letters("g", "t", 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event.as_ref().unwrap().message_id, "now");
    assert_eq!(client.redrive("g", "t", &[]).await.unwrap(), 1);
    let again = next(&mut c).await;
    assert_eq!(again.event.message_id, "now");
    c.ack(&again).await.unwrap();
    c.close().await.unwrap();

    // Seek back: the group gets the event again.
    let mut c = consumer(&client, "g", "t", 4).await;
    client
        .seek_group("g", "t", SystemTime::now() - Duration::from_secs(60))
        .await
        .unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.event.message_id, "now");
    c.ack(&d).await.unwrap();
    c.flush().await.unwrap();
}

#[tokio::test]
async fn schedules_through_the_sdk() {
    use chronos_client::proto::schedule::Recurrence;
    use chronos_client::proto::Schedule;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let client = Client::connect([server.endpoint()]).await.unwrap();
    let mut c = consumer(&client, "g", "sdk-ticks", 8).await;
    let schedule = Schedule {
        schedule_id: "sdk-tick".into(),
        topic: "sdk-ticks".into(),
        payload: b"tick".to_vec().into(),
        recurrence: Some(Recurrence::EveryMs(1000)),
        ..Default::default()
    };
    let (info, existed) = client.create_schedule(schedule.clone()).await.unwrap();
    assert!(!existed);
    assert!(info.next_ts > 0);
    let (_, existed) = client.create_schedule(schedule.clone()).await.unwrap();
    assert!(existed, "a retried create is answered as it is");
    let clash = client
        .create_schedule(Schedule {
            payload: b"other".to_vec().into(),
            ..schedule.clone()
        })
        .await
        .unwrap_err();
    assert!(matches!(clash, Error::AlreadyExists { .. }), "{clash:?}");
    let d = next(&mut c).await;
    assert!(d.event.message_id.starts_with("sdk-tick@"), "{d:?}");
    assert!(d.event.headers.contains_key("chronos-nominal-time"));
    c.ack(&d).await.unwrap();
    let got = client.get_schedule("sdk-tick", 2).await.unwrap();
    assert_eq!(got.upcoming_ts.len(), 2);
    assert_eq!(client.list_schedules("sdk-ticks").await.unwrap().len(), 1);
    assert!(client.pause_schedule("sdk-tick").await.unwrap().paused);
    assert!(!client.resume_schedule("sdk-tick").await.unwrap().paused);
    let triggered = client.trigger_schedule("sdk-tick").await.unwrap();
    assert!(triggered.starts_with("sdk-tick@trigger-"));
    client.delete_schedule("sdk-tick").await.unwrap();
    let gone = client.get_schedule("sdk-tick", 0).await.unwrap_err();
    assert!(matches!(gone, Error::NotFound { .. }), "{gone:?}");
}

/// A delete whose answer is lost is tried again on the next node; finding
/// the schedule gone, it reports success: the first attempt deleted it.
#[tokio::test]
async fn a_delete_retried_after_a_lost_answer_succeeds() {
    use chronos_client::proto::schedule::Recurrence;
    use chronos_client::proto::Schedule;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let proxy = Proxy::start(&server.grpc).await;
    let options = chronos_client::ClientOptions {
        request_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let client = Client::connect_with([proxy.addr.clone(), server.endpoint()], options)
        .await
        .unwrap();
    let schedule = Schedule {
        schedule_id: "lost-answer".into(),
        topic: "lost".into(),
        recurrence: Some(Recurrence::EveryMs(60_000)),
        ..Default::default()
    };
    client.create_schedule(schedule).await.unwrap();
    proxy.mute.store(true, Ordering::SeqCst);
    client.delete_schedule("lost-answer").await.unwrap();
    let gone = client.get_schedule("lost-answer", 0).await.unwrap_err();
    assert!(matches!(gone, Error::NotFound { .. }), "{gone:?}");
    // A schedule that never existed is still NotFound.
    let unknown = client.delete_schedule("never-was").await.unwrap_err();
    assert!(matches!(unknown, Error::NotFound { .. }), "{unknown:?}");
}

/// A pull: fetch takes up to N (or what came within the wait), holds them
/// for the ack timeout, and ack settles them by id.
#[tokio::test]
async fn fetch_pulls_up_to_n_and_ack_settles_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let client = Client::connect([server.endpoint()]).await.unwrap();
    // The group exists before the events are due (a new group starts at latest).
    let none = client
        .fetch("pullers", "pull", 5, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    let producer = client.producer(ProducerOptions::default());
    for i in 0..3 {
        producer
            .publish(EventBuilder::new("pull", format!("p-{i}")))
            .await
            .unwrap();
    }
    let mut seen = HashSet::new();
    for want in [2, 1] {
        let got = client
            .fetch("pullers", "pull", 2, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(got.len(), want, "{got:?}");
        for d in &got {
            assert_eq!(d.attempt, 1, "{d:?}");
            assert!(seen.insert(d.event.message_id.clone()), "twice: {d:?}");
        }
        let answer = client.ack("pullers", &got).await.unwrap();
        assert_eq!(answer.acked as usize, want, "{answer:?}");
    }
    wait_inflight(&client, "pullers", "pull", 0).await;
    let bad = client
        .fetch("pullers", "pull", 0, Duration::from_secs(1))
        .await;
    assert!(
        matches!(bad, Err(Error::InvalidOption { ref field, .. }) if field == "max_deliveries"),
        "{bad:?}"
    );
}
