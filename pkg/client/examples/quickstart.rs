//! Publish an event due in 2 s, consume it as group `quickstart`, ack it.
//!
//! ```sh
//! make run   # in another terminal
//! cargo run --example quickstart -p chronos-client -- http://127.0.0.1:9000
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chronos_client::{Client, ConsumerOptions, ProducerOptions, Start};
use futures::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:9000".into());
    let client = Client::connect([addr]).await?;

    // Join the group first: a new group starts at LATEST, i.e. with events
    // that come due from now on.
    let mut consumer = client
        .consumer(ConsumerOptions {
            group: "quickstart".into(),
            topic: "quickstart".into(),
            max_inflight: 16,
            start: Start::Latest,
            ..Default::default()
        })
        .await?;

    let producer = client.producer(ProducerOptions::default());
    let id = format!(
        "hello-{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
    );
    let sent = Instant::now();
    let published = producer
        .publish_after(
            "quickstart",
            id.clone(),
            "hello, later",
            Duration::from_secs(2),
        )
        .await?;
    println!(
        "published {id}: partition {} offset {}, due at {} ms",
        published.partition, published.offset, published.due_ts
    );
    producer.close().await?;

    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await;
        let Ok(Some(delivery)) = next else {
            anyhow::bail!("no delivery within 30 s");
        };
        let delivery = delivery?;
        consumer.ack(&delivery).await?;
        if delivery.event.message_id == id {
            println!(
                "received {id} after {:?} (attempt {}): {:?}",
                sent.elapsed(),
                delivery.attempt,
                String::from_utf8_lossy(&delivery.event.payload)
            );
            break;
        }
    }
    consumer.close().await?;
    Ok(())
}
