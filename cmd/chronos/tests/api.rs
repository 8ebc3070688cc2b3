//! Publish, batch, dedup, replay and every bad-input case, over gRPC on loopback
//! against a real `chronos serve` process.

mod common;

use chronos_proto::v1::{replay_request::Range, Event, OffsetRange, ReplayRequest, TimeRange};
use common::{batch_req, event, now_ms, publish_ok, publish_req, replay_all, Server};
use tonic::Code;

#[tokio::test]
async fn publish_returns_partition_offset_and_due_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.events().await;

    let before = now_ms();
    let r = c
        .publish(publish_req(event("orders", "o-1", b"hello")))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.duplicate);
    assert_eq!(r.message_id, "o-1");
    assert!(r.partition < 8);
    assert_eq!(r.offset, 0, "first event of its partition");
    assert!(
        r.due_ts >= before && r.due_ts <= now_ms(),
        "schedule_ts 0 means now: {}",
        r.due_ts
    );

    let future = now_ms() + 3_600_000;
    let ev = Event {
        schedule_ts: future,
        ..event("orders", "o-2", b"later")
    };
    let r2 = c.publish(publish_req(ev)).await.unwrap().into_inner();
    assert_eq!(r2.due_ts, future, "a future schedule_ts is the due time");
}

#[tokio::test]
async fn duplicates_return_the_original_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.events().await;

    let first = c
        .publish(publish_req(event("t", "same", b"one")))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .publish(publish_req(event("t", "same", b"two")))
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(
        (again.partition, again.offset, again.due_ts),
        (first.partition, first.offset, first.due_ts)
    );

    // Same id on another topic is a different event.
    let other = c
        .publish(publish_req(event("t2", "same", b"x")))
        .await
        .unwrap()
        .into_inner();
    assert!(!other.duplicate);

    // Duplicates inside one batch, and against an earlier publish.
    let b = c
        .publish_batch(batch_req(vec![
            event("t", "b1", b""),
            event("t", "b1", b""),
            event("t", "same", b""),
        ]))
        .await
        .unwrap()
        .into_inner();
    let flags: Vec<bool> = b.results.iter().map(|r| r.duplicate).collect();
    assert_eq!(flags, vec![false, true, true]);
    assert_eq!(b.results[0].offset, b.results[1].offset);

    let stored = replay_all(&mut c, "t").await;
    let mut ids: Vec<_> = stored
        .iter()
        .map(|e| e.event.as_ref().unwrap().message_id.clone())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["b1", "same"], "each id stored once");
    assert_eq!(
        stored
            .iter()
            .find(|e| e.event.as_ref().unwrap().message_id == "same")
            .unwrap()
            .event
            .as_ref()
            .unwrap()
            .payload
            .as_ref(),
        b"one"
    );
}

#[tokio::test]
async fn batch_results_are_in_request_order_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.events().await;

    let events: Vec<Event> = (0..500)
        .map(|i| event("batch", &format!("m-{i}"), format!("p{i}").as_bytes()))
        .collect();
    let r = publish_ok(&mut c, events).await;
    assert_eq!(r.results.len(), 500);
    for (i, res) in r.results.iter().enumerate() {
        assert_eq!(res.message_id, format!("m-{i}"));
        assert!(!res.duplicate);
    }
    let partitions: std::collections::HashSet<u32> =
        r.results.iter().map(|r| r.partition).collect();
    assert!(partitions.len() > 1, "500 ids spread over partitions");
    // Offsets within a partition are dense: 0..n.
    for p in &partitions {
        let mut offs: Vec<u64> = r
            .results
            .iter()
            .filter(|r| r.partition == *p)
            .map(|r| r.offset)
            .collect();
        offs.sort();
        assert_eq!(offs, (0..offs.len() as u64).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn replay_by_offset_range_and_topic() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--partitions", "2"]);
    let mut c = server.events().await;

    let with_key = |topic: &str, id: &str| Event {
        key: "k".into(),
        ..event(topic, id, id.as_bytes())
    };
    for i in 0..50u32 {
        c.publish(publish_req(with_key(
            if i.is_multiple_of(2) { "even" } else { "odd" },
            &format!("e{i}"),
        )))
        .await
        .unwrap();
    }
    let p = c
        .publish(publish_req(with_key("even", "probe")))
        .await
        .unwrap()
        .into_inner()
        .partition;

    let req = |topic: &str, from, to| ReplayRequest {
        topic: topic.into(),
        partition_id: Some(p as i32),
        range: Some(Range::Offsets(OffsetRange { from, to })),
        key: String::new(),
        ..Default::default()
    };
    let collect = |mut s: tonic::Streaming<chronos_proto::v1::ReplayEvent>| async move {
        let mut v = Vec::new();
        while let Some(e) = s.message().await.unwrap() {
            v.push(e);
        }
        v
    };
    let all = collect(c.replay(req("", 0, 0)).await.unwrap().into_inner()).await;
    assert_eq!(all.len(), 51);
    assert!(
        all.windows(2).all(|w| w[1].offset == w[0].offset + 1),
        "offset order, dense"
    );

    let mid = collect(c.replay(req("", 10, 20)).await.unwrap().into_inner()).await;
    assert_eq!(
        mid.iter().map(|e| e.offset).collect::<Vec<_>>(),
        (10..20).collect::<Vec<_>>()
    );
    assert_eq!(mid[0].event.as_ref().unwrap().message_id, "e10");

    let odd = collect(c.replay(req("odd", 0, 0)).await.unwrap().into_inner()).await;
    assert_eq!(odd.len(), 25);
    assert!(odd.iter().all(|e| e.event.as_ref().unwrap().topic == "odd"));

    let past_end = collect(c.replay(req("", 1000, 0)).await.unwrap().into_inner()).await;
    assert!(past_end.is_empty());
}

async fn expect_invalid(
    result: Result<tonic::Response<impl Sized>, tonic::Status>,
    code: Code,
    field: &str,
) {
    match result {
        Ok(_) => panic!("expected {code:?} naming {field}, got OK"),
        Err(s) => {
            assert_eq!(s.code(), code, "{field}: {}", s.message());
            assert!(
                s.message().contains(field),
                "message should name {field}: {}",
                s.message()
            );
        }
    }
}

#[tokio::test]
async fn every_bad_input_is_rejected_precisely_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--partitions", "4"]);
    let mut c = server.events().await;
    let inv = Code::InvalidArgument;

    expect_invalid(
        c.publish(chronos_proto::v1::PublishRequest {
            event: None,
            reschedule: false,
        })
        .await,
        inv,
        "event",
    )
    .await;
    expect_invalid(
        c.publish(publish_req(event("t", "", b""))).await,
        inv,
        "event.message_id",
    )
    .await;
    expect_invalid(
        c.publish(publish_req(event("t", &"x".repeat(129), b"")))
            .await,
        inv,
        "event.message_id",
    )
    .await;
    expect_invalid(
        c.publish(publish_req(event("", "m", b""))).await,
        inv,
        "event.topic",
    )
    .await;
    expect_invalid(
        c.publish(publish_req(event("bad topic!", "m", b""))).await,
        inv,
        "event.topic",
    )
    .await;
    expect_invalid(
        c.publish(publish_req(event(&"t".repeat(256), "m", b"")))
            .await,
        inv,
        "event.topic",
    )
    .await;
    expect_invalid(
        c.publish(publish_req(event("__internal", "m", b""))).await,
        inv,
        "reserved",
    )
    .await;
    let negative = Event {
        schedule_ts: -5,
        ..event("t", "m", b"")
    };
    expect_invalid(
        c.publish(publish_req(negative)).await,
        inv,
        "event.schedule_ts",
    )
    .await;
    let big = vec![0u8; (1 << 20) + 1];
    expect_invalid(
        c.publish(publish_req(event("t", "m", &big))).await,
        inv,
        "event.payload",
    )
    .await;

    expect_invalid(c.publish_batch(batch_req(vec![])).await, inv, "events").await;
    let too_many: Vec<Event> = (0..10_001)
        .map(|i| event("t", &format!("m{i}"), b""))
        .collect();
    expect_invalid(c.publish_batch(batch_req(too_many)).await, inv, "events").await;
    let one_bad = vec![event("t", "ok", b""), event("t", "", b"")];
    expect_invalid(
        c.publish_batch(batch_req(one_bad)).await,
        inv,
        "events[1].message_id",
    )
    .await;

    let megabyte = vec![0u8; 1 << 20];
    let too_big: Vec<Event> = (0..33)
        .map(|i| event("t", &format!("big{i}"), &megabyte))
        .collect();
    expect_invalid(
        c.publish_batch(batch_req(too_big)).await,
        inv,
        "max_batch_bytes",
    )
    .await;

    let replay = |partition_id, range| ReplayRequest {
        topic: String::new(),
        partition_id,
        range,
        key: String::new(),
        ..Default::default()
    };
    let offsets = Some(Range::Offsets(OffsetRange { from: 0, to: 0 }));
    expect_invalid(
        c.replay(replay(Some(4), offsets)).await,
        inv,
        "partition_id",
    )
    .await;
    expect_invalid(
        c.replay(replay(Some(-7), offsets)).await,
        inv,
        "partition_id",
    )
    .await;
    expect_invalid(c.replay(replay(Some(0), None)).await, inv, "range").await;
    let backwards = Some(Range::Offsets(OffsetRange { from: 10, to: 5 }));
    expect_invalid(
        c.replay(replay(Some(0), backwards)).await,
        inv,
        "offsets.to",
    )
    .await;
    let backwards = Some(Range::DueTime(TimeRange {
        from_ts: 10,
        to_ts: 5,
    }));
    expect_invalid(
        c.replay(replay(Some(0), backwards)).await,
        inv,
        "due_time.to_ts",
    )
    .await;
    let negative = Some(Range::PublishTime(TimeRange {
        from_ts: -1,
        to_ts: 0,
    }));
    expect_invalid(
        c.replay(replay(None, negative)).await,
        inv,
        "publish_time.from_ts",
    )
    .await;

    // Nothing of the above was stored, and the server is still serving.
    assert!(replay_all(&mut c, "").await.is_empty());
    let ok = c
        .publish(publish_req(event("t", "after", b"")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.offset, 0);
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() {
    use tonic::codegen::http::uri::PathAndQuery;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let channel = tonic::transport::Channel::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    // Field 1 (event) as length-delimited, claiming 100 bytes but carrying 3.
    let garbage = bytes::Bytes::from_static(&[0x0a, 100, 1, 2, 3]);
    let path = PathAndQuery::from_static("/chronos.v1.EventService/Publish");
    let result: Result<tonic::Response<bytes::Bytes>, _> = grpc
        .unary(tonic::Request::new(garbage), path, raw::RawCodec)
        .await;
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status.message().contains("PublishRequest"),
        "{}",
        status.message()
    );
    // Still serving.
    let mut c = server.events().await;
    c.publish(publish_req(event("t", "fine", b"")))
        .await
        .unwrap();
}

mod raw {
    //! Sends raw bytes as a request body, to test malformed protobuf.
    use bytes::{Buf, BufMut, Bytes};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::Status;

    #[derive(Default)]
    pub struct RawCodec;
    pub struct RawEncoder;
    pub struct RawDecoder;

    impl Codec for RawCodec {
        type Encode = Bytes;
        type Decode = Bytes;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Bytes;
        type Error = Status;
        fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put(item);
            Ok(())
        }
    }

    impl Decoder for RawDecoder {
        type Item = Bytes;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
            Ok(Some(src.copy_to_bytes(src.remaining())))
        }
    }
}

#[tokio::test]
async fn every_fsync_mode_publishes_and_replays() {
    for mode in ["always", "batch", "periodic"] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(&dir.path().join("data"), &["--fsync-mode", mode]);
        let mut c = server.events().await;
        let events = (0..100)
            .map(|i| event("modes", &format!("{mode}-{i}"), b"x"))
            .collect();
        let r = publish_ok(&mut c, events).await;
        assert_eq!(r.results.len(), 100, "{mode}");
        assert_eq!(replay_all(&mut c, "modes").await.len(), 100, "{mode}");
        let (_, metrics) = server.http_get("/metrics").unwrap();
        assert!(metrics.contains("chronos_wal_fsyncs_total"), "{mode}");
    }
}

#[tokio::test]
async fn replay_by_due_and_publish_time_is_exact_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.events().await;
    let hour = 3_600_000;
    let base = now_ms() + hour;
    // Due times deliberately out of offset order: event i is due at base + ((i * 7) % 50) s.
    let due = |i: i64| base + ((i * 7) % 50) * 1_000;
    let first: Vec<Event> = (0..50)
        .map(|i| Event {
            schedule_ts: due(i),
            ..event("dt", &format!("a{i}"), b"")
        })
        .collect();
    publish_ok(&mut c, first).await;
    let between = now_ms();
    // Wait until the clock moves so the two publishes have distinct times.
    while now_ms() <= between {
        tokio::task::yield_now().await;
    }
    let second: Vec<Event> = (50..100)
        .map(|i| Event {
            schedule_ts: due(i),
            ..event("dt", &format!("a{i}"), b"")
        })
        .collect();
    publish_ok(&mut c, second).await;
    publish_ok(
        &mut c,
        vec![Event {
            schedule_ts: due(3),
            ..event("other", "x", b"")
        }],
    )
    .await;

    let collect = |range: Range| {
        let mut c = c.clone();
        async move {
            let req = ReplayRequest {
                topic: "dt".into(),
                partition_id: None,
                range: Some(range),
                key: String::new(),
                ..Default::default()
            };
            let mut s = c.replay(req).await.unwrap().into_inner();
            let mut ids = Vec::new();
            while let Some(e) = s.message().await.unwrap() {
                ids.push(e.event.unwrap().message_id);
            }
            ids.sort();
            ids
        }
    };
    let (lo, hi) = (base + 10_000, base + 20_000);
    let mut want: Vec<String> = (0..100)
        .filter(|&i| due(i) >= lo && due(i) < hi)
        .map(|i| format!("a{i}"))
        .collect();
    want.sort();
    assert_eq!(want.len(), 20);
    assert_eq!(
        collect(Range::DueTime(TimeRange {
            from_ts: lo,
            to_ts: hi
        }))
        .await,
        want
    );

    let mut late: Vec<String> = (50..100).map(|i| format!("a{i}")).collect();
    late.sort();
    assert_eq!(
        collect(Range::PublishTime(TimeRange {
            from_ts: between + 1,
            to_ts: 0
        }))
        .await,
        late
    );
    let mut early: Vec<String> = (0..50).map(|i| format!("a{i}")).collect();
    early.sort();
    assert_eq!(
        collect(Range::PublishTime(TimeRange {
            from_ts: 0,
            to_ts: between + 1
        }))
        .await,
        early
    );
}
