//! The Rust SDK's batching producer (`chronos-client`) against a real
//! `chronos serve` process: many callers' publishes and cancels gathered
//! into `PublishBatch` and `CancelBatch` calls, each caller answered alone.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use chronos_client::{Client, Error, EventBuilder, ProducerOptions, Replay};
use common::Server;
use futures::StreamExt;

/// `chronos_publish_requests_total` samples whose labels contain `label`.
fn publish_requests(server: &Server, label: &str) -> f64 {
    let (_, body) = server.http_get("/metrics").expect("GET /metrics");
    body.lines()
        .filter(|l| l.starts_with("chronos_publish_requests_total{") && l.contains(label))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// `chronos_cancel_requests_total` samples whose labels contain `label`.
fn cancel_requests(server: &Server, label: &str) -> f64 {
    let (_, body) = server.http_get("/metrics").expect("GET /metrics");
    body.lines()
        .filter(|l| l.starts_with("chronos_cancel_requests_total{") && l.contains(label))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn producer_batches_many_callers_and_answers_each() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let client = Client::connect([server.endpoint()]).await.unwrap();
    let producer = client.producer(ProducerOptions {
        linger: Duration::from_millis(200),
        max_batch_events: 64,
        ..Default::default()
    });
    let callers = 200;
    let due = SystemTime::now() + Duration::from_secs(3600);
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let p = producer.clone();
            tokio::spawn(async move {
                let mut ev = EventBuilder::new("batched", format!("m-{i}"))
                    .payload(format!("payload-{i}"))
                    .header("i", i.to_string())
                    .due_at(due);
                if i % 2 == 0 {
                    ev = ev.key(format!("k-{}", i % 7));
                }
                (i, p.publish(ev).await)
            })
        })
        .collect();
    // One bad event among them fails alone.
    let bad = producer
        .publish(EventBuilder::new("__reserved", "bad"))
        .await;
    let mut results = HashMap::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        results.insert(i, r.expect("publish"));
    }
    match bad {
        Err(Error::InvalidArgument { message, field }) => {
            assert!(message.starts_with("event.topic"), "{message}");
            assert_eq!(field.as_deref(), Some("event.topic"));
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }

    let batches = publish_requests(&server, "rpc=\"PublishBatch\"");
    assert!(
        (4.0..=12.0).contains(&batches),
        "{callers} publishes took {batches} PublishBatch RPCs"
    );
    assert_eq!(publish_requests(&server, "rpc=\"Publish\""), 0.0);

    // Each caller got its own event's place: replay says who is at each offset.
    let stored: HashMap<(u32, u64), String> = client
        .replay(Replay::offsets(0..0).topic("batched"))
        .await
        .unwrap()
        .map(|r| r.expect("replay"))
        .map(|r| ((r.partition, r.offset), r.event.message_id))
        .collect()
        .await;
    assert_eq!(stored.len(), callers);
    for (i, p) in &results {
        assert_eq!(stored[&(p.partition, p.offset)], format!("m-{i}"));
        assert!(!p.duplicate);
        assert_eq!(p.due_ts, chronos_client::to_ms(due));
    }
    // Publishing one again answers the original.
    let again = producer
        .publish(EventBuilder::new("batched", "m-7").due_at(due))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.partition, again.offset),
        (results[&7].partition, results[&7].offset)
    );

    // Cancels batch the same way, each answered as `Client::cancel` is.
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let p = producer.clone();
            let key = if i % 2 == 0 {
                format!("k-{}", i % 7)
            } else {
                String::new()
            };
            tokio::spawn(async move { p.cancel("batched", format!("m-{i}"), key).await })
        })
        .collect();
    let unknown = producer.cancel("batched", "never", "").await;
    let bad = producer.cancel("__reserved", "x", "").await;
    for t in tasks {
        t.await.unwrap().expect("cancel");
    }
    assert!(
        matches!(unknown, Err(Error::NotFound { .. })),
        "{unknown:?}"
    );
    assert!(
        matches!(&bad, Err(Error::InvalidArgument { field: Some(f), .. }) if f == "topic"),
        "{bad:?}"
    );
    let batches = cancel_requests(&server, "rpc=\"CancelBatch\"");
    assert!(
        (4.0..=14.0).contains(&batches),
        "{callers} cancels took {batches} CancelBatch RPCs"
    );
    let topics = client.list_topics().await.unwrap();
    assert!(
        topics.iter().any(|t| t.name == "batched" && t.pending == 0),
        "{topics:?}"
    );
    producer.close().await.unwrap();

    // close() sends what is queued without waiting for the linger.
    let lazy = client.producer(ProducerOptions {
        linger: Duration::from_secs(30),
        ..Default::default()
    });
    let publish = lazy.publish(EventBuilder::new("batched", "late"));
    tokio::pin!(publish);
    // One poll queues the event (the queue has room); then it waits for its batch.
    assert!(futures::poll!(&mut publish).is_pending());
    let closed_at = Instant::now();
    let (late, closed) = tokio::join!(publish, lazy.clone().close());
    closed.unwrap();
    assert!(closed_at.elapsed() < Duration::from_secs(10));
    assert!(!late.unwrap().duplicate);
    assert!(matches!(
        lazy.publish(EventBuilder::new("batched", "after-close"))
            .await,
        Err(Error::Closed(_))
    ));
    assert!(matches!(
        client.producer(ProducerOptions::default()).close().await,
        Ok(())
    ));
}
