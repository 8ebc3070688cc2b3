//! What consumers saw: an SDK consumer that acks everything and records each
//! delivery, and the checks on what it recorded.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chronos_client::{Client, Consumer, ConsumerOptions, Start};
use futures::StreamExt;

use super::now_ms;

/// An SDK consumer of `group` reading `topic` from the earliest event.
pub async fn consumer(client: &Client, group: &str, topic: &str, max_inflight: u32) -> Consumer {
    client
        .consumer(ConsumerOptions {
            group: group.into(),
            topic: topic.into(),
            max_inflight,
            start: Start::Earliest,
            ..Default::default()
        })
        .await
        .expect("subscribe")
}

/// What a consumer saw of each message id: (attempt, received at ms, due_ts).
pub type Seen = Arc<Mutex<HashMap<String, Vec<(u32, i64, i64)>>>>;

/// Runs an SDK consumer (which subscribes again when its stream breaks) that
/// acks everything and records what it saw, until the returned handle is aborted.
pub async fn collect(
    endpoints: Vec<String>,
    group: &str,
    topic: &str,
    max_inflight: u32,
) -> (Seen, tokio::task::JoinHandle<()>) {
    let client = Client::connect(endpoints).await.expect("connect");
    collect_with(&client, group, topic, max_inflight).await
}

/// [`collect`] through `client` (one with TLS, say).
pub async fn collect_with(
    client: &Client,
    group: &str,
    topic: &str,
    max_inflight: u32,
) -> (Seen, tokio::task::JoinHandle<()>) {
    let mut consumer = consumer(client, group, topic, max_inflight).await;
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(d) = consumer.next().await {
            let d = match d {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("consumer: {e}");
                    continue;
                }
            };
            record
                .lock()
                .unwrap()
                .entry(d.event.message_id.clone())
                .or_default()
                .push((d.attempt, now_ms(), d.due_ts));
            let _ = consumer.ack(&d).await;
        }
    });
    (seen, task)
}

/// Waits until `seen` holds every id of `want`; fails the test, naming a few
/// missing ids and `context`, when some are still missing at `deadline`.
pub async fn wait_all(
    seen: &Seen,
    want: &BTreeMap<String, i64>,
    deadline: Duration,
    context: impl Fn() -> String,
) {
    let until = Instant::now() + deadline;
    loop {
        let missing: Vec<String> = {
            let seen = seen.lock().unwrap();
            want.keys()
                .filter(|id| !seen.contains_key(*id))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < until,
            "{} of {} events not delivered within {deadline:?}, e.g. {:?}; {context}",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(5)],
            context = context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// No delivery came before its due time, and each came with the due time the
/// publish was answered with.
pub fn assert_none_early(seen: &Seen, want: &BTreeMap<String, i64>) {
    for (id, got) in seen.lock().unwrap().iter() {
        for &(attempt, at, due) in got {
            assert!(
                at >= due,
                "{id} attempt {attempt} arrived at {at}, {} ms before its due time {due}",
                due - at
            );
            if let Some(&published_due) = want.get(id) {
                assert_eq!(due, published_due, "{id}: delivered with another due time");
            }
        }
    }
}
