//! Acks are recorded in the log together, up to `delivery.record_linger`
//! apart, unless their caller waits for the answer: a unary `Ack`, an
//! `AckRequest` on a Consume stream with `wait`, the SDK's `flush`. The
//! linger here is far longer than any wait below, so an answer that came
//! after it could not pass.

mod common;

use std::time::Duration;

use chronos_client::{Client, ConsumerOptions, Start};
use chronos_proto::v1::{
    consume_request, consume_response, AckItem, AckRequest, AckResponse, ConsumeRequest,
    ConsumeResponse, Delivery, Event,
};
use common::{event, publish_ok, subscribe_req, Server};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const LINGER: &str = "20s";
/// Well within the linger: an ack recorded at once is answered by then.
const PROMPT: Duration = Duration::from_secs(8);
/// How long a gathered ack is checked to stay unanswered.
const QUIET: Duration = Duration::from_secs(1);

fn keyed(id: &str) -> Event {
    Event {
        key: "one-partition".into(),
        ..event("t", id, b"")
    }
}

fn ack(ids: &[&str], wait: bool) -> ConsumeRequest {
    ConsumeRequest {
        kind: Some(consume_request::Kind::Ack(AckRequest {
            consumer_group: String::new(),
            items: ids
                .iter()
                .map(|id| AckItem {
                    delivery_id: id.to_string(),
                    ..Default::default()
                })
                .collect(),
            wait,
        })),
    }
}

async fn next_message(
    stream: &mut Streaming<ConsumeResponse>,
    within: Duration,
) -> Option<consume_response::Kind> {
    match tokio::time::timeout(within, stream.message()).await {
        Ok(msg) => msg.expect("stream").expect("open").kind,
        Err(_) => None,
    }
}

async fn delivery(stream: &mut Streaming<ConsumeResponse>) -> Delivery {
    match next_message(stream, PROMPT).await {
        Some(consume_response::Kind::Delivery(d)) => d,
        other => panic!("expected a delivery, got {other:?}"),
    }
}

async fn answer(stream: &mut Streaming<ConsumeResponse>, within: Duration) -> Option<AckResponse> {
    match next_message(stream, within).await {
        Some(consume_response::Kind::Ack(a)) => Some(a),
        None => None,
        other => panic!("expected an ack answer, got {other:?}"),
    }
}

#[tokio::test]
async fn stream_acks_gather_until_one_waits_and_unary_acks_do_not_wait() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("CHRONOS_DELIVERY__RECORD_LINGER", LINGER)];
    let server = Server::start_with_env(&dir.path().join("data"), &[], &env);
    let mut c = server.events().await;
    let (tx, rx) = mpsc::channel(16);
    tx.send(ConsumeRequest {
        kind: Some(consume_request::Kind::Subscribe(subscribe_req(
            "g", "t", 10,
        ))),
    })
    .await
    .unwrap();
    let mut stream = c
        .consume(ReceiverStream::new(rx))
        .await
        .expect("consume")
        .into_inner();
    // One key: the three events share a partition, and so its linger.
    publish_ok(&mut c, vec![keyed("a"), keyed("b"), keyed("c")]).await;
    let (a, b, d) = (
        delivery(&mut stream).await,
        delivery(&mut stream).await,
        delivery(&mut stream).await,
    );

    tx.send(ack(&[&a.delivery_id], false)).await.unwrap();
    assert_eq!(
        answer(&mut stream, QUIET).await,
        None,
        "an ack nobody waits for is gathered, not recorded at once"
    );
    tx.send(ack(&[&b.delivery_id], true)).await.unwrap();
    let mut acked = 0;
    for _ in 0..2 {
        let got = answer(&mut stream, PROMPT)
            .await
            .expect("an ack that waits is recorded at once, with the gathered one");
        acked += got.acked;
    }
    assert_eq!(acked, 2);

    let unary = tokio::time::timeout(
        PROMPT,
        c.ack(AckRequest {
            consumer_group: "g".into(),
            items: vec![AckItem {
                delivery_id: d.delivery_id.clone(),
                ..Default::default()
            }],
            wait: false,
        }),
    )
    .await
    .expect("a unary Ack is recorded at once: its caller waits")
    .expect("ack");
    assert_eq!(unary.into_inner().acked, 1);
}

#[tokio::test]
async fn the_sdk_flush_does_not_wait_out_the_linger() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("CHRONOS_DELIVERY__RECORD_LINGER", LINGER)];
    let server = Server::start_with_env(&dir.path().join("data"), &[], &env);
    let client = Client::connect([server.endpoint()]).await.expect("connect");
    let mut consumer = client
        .consumer(ConsumerOptions {
            group: "g".into(),
            topic: "t".into(),
            start: Start::Earliest,
            ..Default::default()
        })
        .await
        .expect("subscribe");
    let mut c = server.events().await;
    publish_ok(&mut c, vec![keyed("a")]).await;
    let d = tokio::time::timeout(PROMPT, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("open")
        .expect("delivery");
    consumer.ack(&d).await.unwrap();
    tokio::time::timeout(PROMPT, consumer.flush())
        .await
        .expect("flush is answered without the linger")
        .expect("flush");
}
