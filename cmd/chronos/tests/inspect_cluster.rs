//! Inspecting pending and stored events in a 3-node cluster: every node
//! answers for every partition (its leader's part forwarded), and the
//! answers are the same from each node and exact; one event is described by
//! its partition's leader whichever node is asked.

mod common;

use std::collections::BTreeMap;

use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{
    CountPendingRequest, DescribeEventRequest, Event, EventStatus, ListPendingRequest,
    PublishBatchRequest, SearchEventsRequest, TimeRange,
};
use common::cluster::{Cluster, Options};
use common::now_ms;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_lists_and_counts_the_whole_clusters_pending_events() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), Options::default());
    let mut c = EventServiceClient::connect(cluster.endpoint(1))
        .await
        .unwrap();
    let base = (now_ms() / 60_000 + 10) * 60_000;
    let mut expected = BTreeMap::new();
    let events: Vec<Event> = (0..300)
        .map(|n| {
            let due = base + (n * 7_919) % 1_800_000;
            expected.insert(format!("p{n}"), due);
            Event {
                topic: "jobs".into(),
                message_id: format!("p{n}"),
                schedule_ts: due,
                ..Default::default()
            }
        })
        .collect();
    c.publish_batch(PublishBatchRequest { events })
        .await
        .expect("publish");
    let mut answers = Vec::new();
    for node in 1..=3 {
        let mut c = EventServiceClient::connect(cluster.endpoint(node))
            .await
            .unwrap();
        let mut listed = Vec::new();
        let mut token = String::new();
        loop {
            let page = c
                .list_pending(ListPendingRequest {
                    topic: "jobs".into(),
                    page_token: token,
                    page_size: 64,
                    ..Default::default()
                })
                .await
                .expect("list_pending")
                .into_inner();
            listed.extend(
                page.events
                    .iter()
                    .map(|e| (e.event.as_ref().unwrap().message_id.clone(), e.due_ts)),
            );
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        let got: BTreeMap<String, i64> = listed.iter().cloned().collect();
        assert_eq!(got.len(), listed.len(), "node {node} listed an event twice");
        assert_eq!(got, expected, "node {node}");
        let counts = c
            .count_pending(CountPendingRequest {
                topic: "jobs".into(),
                due_time: Some(TimeRange {
                    from_ts: base,
                    to_ts: base + 1_800_000,
                }),
                bucket_ms: 300_000,
                partition_id: None,
            })
            .await
            .expect("count_pending")
            .into_inner();
        assert_eq!(counts.total, 300, "node {node}");
        for b in &counts.buckets {
            let want = expected
                .values()
                .filter(|&&d| d >= b.from_ts && d < b.from_ts + 300_000)
                .count() as u64;
            assert_eq!(b.count, want, "node {node}, bucket at {}", b.from_ts);
        }
        let found = c
            .search_events(SearchEventsRequest {
                topic: "jobs".into(),
                message_id_prefix: "p29".into(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .expect("search_events")
            .into_inner();
        let mut ids: Vec<String> = found
            .events
            .iter()
            .map(|e| e.event.as_ref().unwrap().message_id.clone())
            .collect();
        ids.sort();
        assert_eq!(ids.len(), 11, "p29 and p290-p299 from node {node}: {ids:?}");
        // Events of every partition, each described by its leader.
        for n in [0, 1, 2, 3, 150, 299] {
            let id = format!("p{n}");
            let described = c
                .describe_event(DescribeEventRequest {
                    topic: "jobs".into(),
                    message_id: id.clone(),
                    key: String::new(),
                })
                .await
                .expect("describe_event")
                .into_inner();
            assert_eq!(
                described.status(),
                EventStatus::Pending,
                "{id} from node {node}"
            );
            assert_eq!(described.due_ts, expected[&id], "{id} from node {node}");
            assert_eq!(described.event.unwrap().message_id, id);
        }
        answers.push((listed, counts));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "nodes disagree");
}
