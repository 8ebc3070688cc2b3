//! Leader redirect: a node that does not lead answers `UNAVAILABLE` with the
//! `chronos-leader` hint; the client finds the leader's address with
//! `ClusterStatus` and retries there. Today's server is a single node, so two
//! fake nodes (in-process tonic servers) play the cluster.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use chronos_client::proto::admin_service_server::{AdminService, AdminServiceServer};
use chronos_client::proto::event_service_server::{EventService, EventServiceServer};
use chronos_client::proto::*;
use chronos_client::{Client, Error, EventBuilder, LEADER_HINT};
use futures::Stream;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

type Answer<T> = Result<Response<T>, Status>;
type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A fake node: leads (answers publishes with partition `id`) or refuses
/// with a hint naming `leader`; `ClusterStatus` lists `nodes`.
struct Node {
    id: u64,
    leader: u64,
    nodes: Vec<NodeInfo>,
    publishes: Arc<AtomicU32>,
}

fn nope<T>() -> Answer<T> {
    Err(Status::unimplemented("not in this fake"))
}

#[tonic::async_trait]
impl EventService for Node {
    async fn publish(&self, r: Request<PublishRequest>) -> Answer<PublishResponse> {
        self.publishes.fetch_add(1, Ordering::SeqCst);
        if self.id != self.leader {
            let mut s = Status::unavailable(format!("node {} does not lead", self.id));
            let hint = self.leader.to_string().parse().expect("ascii");
            s.metadata_mut().insert(LEADER_HINT, hint);
            return Err(s);
        }
        let event = r.into_inner().event.unwrap_or_default();
        Ok(Response::new(PublishResponse {
            partition: self.id as u32,
            offset: 41,
            due_ts: 7,
            duplicate: false,
            message_id: event.message_id,
        }))
    }
    async fn publish_batch(&self, _: Request<PublishBatchRequest>) -> Answer<PublishBatchResponse> {
        nope()
    }
    async fn cancel(&self, _: Request<CancelRequest>) -> Answer<CancelResponse> {
        nope()
    }
    async fn cancel_batch(&self, _: Request<CancelBatchRequest>) -> Answer<CancelBatchResponse> {
        nope()
    }
    type SubscribeStream = Boxed<Delivery>;
    async fn subscribe(&self, _: Request<SubscribeRequest>) -> Answer<Self::SubscribeStream> {
        nope()
    }
    async fn ack(&self, _: Request<AckRequest>) -> Answer<AckResponse> {
        nope()
    }
    type ConsumeStream = Boxed<ConsumeResponse>;
    async fn consume(&self, _: Request<Streaming<ConsumeRequest>>) -> Answer<Self::ConsumeStream> {
        nope()
    }
    type ReplayStream = Boxed<ReplayEvent>;
    async fn replay(&self, _: Request<ReplayRequest>) -> Answer<Self::ReplayStream> {
        nope()
    }
    async fn search_events(&self, _: Request<SearchEventsRequest>) -> Answer<SearchEventsResponse> {
        nope()
    }
    async fn list_pending(&self, _: Request<ListPendingRequest>) -> Answer<ListPendingResponse> {
        nope()
    }
    async fn count_pending(&self, _: Request<CountPendingRequest>) -> Answer<CountPendingResponse> {
        nope()
    }
    async fn describe_event(
        &self,
        _: Request<DescribeEventRequest>,
    ) -> Answer<DescribeEventResponse> {
        nope()
    }
    async fn create_schedule(
        &self,
        _: Request<CreateScheduleRequest>,
    ) -> Answer<CreateScheduleResponse> {
        nope()
    }
    async fn update_schedule(&self, _: Request<UpdateScheduleRequest>) -> Answer<ScheduleResponse> {
        nope()
    }
    async fn pause_schedule(&self, _: Request<PauseScheduleRequest>) -> Answer<ScheduleResponse> {
        nope()
    }
    async fn resume_schedule(&self, _: Request<ResumeScheduleRequest>) -> Answer<ScheduleResponse> {
        nope()
    }
    async fn delete_schedule(
        &self,
        _: Request<DeleteScheduleRequest>,
    ) -> Answer<DeleteScheduleResponse> {
        nope()
    }
    async fn get_schedule(&self, _: Request<GetScheduleRequest>) -> Answer<ScheduleResponse> {
        nope()
    }
    async fn list_schedules(
        &self,
        _: Request<ListSchedulesRequest>,
    ) -> Answer<ListSchedulesResponse> {
        nope()
    }
    async fn trigger_schedule(
        &self,
        _: Request<TriggerScheduleRequest>,
    ) -> Answer<TriggerScheduleResponse> {
        nope()
    }
}

#[tonic::async_trait]
impl AdminService for Node {
    async fn list_topics(&self, _: Request<ListTopicsRequest>) -> Answer<ListTopicsResponse> {
        nope()
    }
    async fn list_partitions(
        &self,
        _: Request<ListPartitionsRequest>,
    ) -> Answer<ListPartitionsResponse> {
        nope()
    }
    async fn cluster_status(
        &self,
        _: Request<ClusterStatusRequest>,
    ) -> Answer<ClusterStatusResponse> {
        Ok(Response::new(ClusterStatusResponse {
            node_id: self.id,
            nodes: self.nodes.clone(),
            partitions: vec![],
            replication_factor: self.nodes.len() as u32,
            ..Default::default()
        }))
    }
    async fn list_groups(&self, _: Request<ListGroupsRequest>) -> Answer<ListGroupsResponse> {
        nope()
    }
    async fn describe_group(
        &self,
        _: Request<DescribeGroupRequest>,
    ) -> Answer<DescribeGroupResponse> {
        nope()
    }
    async fn seek_group(&self, _: Request<SeekGroupRequest>) -> Answer<SeekGroupResponse> {
        nope()
    }
    async fn delete_group(&self, _: Request<DeleteGroupRequest>) -> Answer<DeleteGroupResponse> {
        nope()
    }
    async fn list_dead_letters(
        &self,
        _: Request<ListDeadLettersRequest>,
    ) -> Answer<ListDeadLettersResponse> {
        nope()
    }
    async fn redrive_dead_letters(
        &self,
        _: Request<RedriveDeadLettersRequest>,
    ) -> Answer<RedriveDeadLettersResponse> {
        nope()
    }
    async fn rebalance(&self, _: Request<RebalanceRequest>) -> Answer<RebalanceResponse> {
        nope()
    }
    async fn add_node(&self, _: Request<AddNodeRequest>) -> Answer<AddNodeResponse> {
        nope()
    }
    async fn remove_node(&self, _: Request<RemoveNodeRequest>) -> Answer<RemoveNodeResponse> {
        nope()
    }
}

/// Serves `node` on `listener` until the test ends.
fn serve(listener: TcpListener, node: Node) {
    let node = Arc::new(node);
    let router = tonic::transport::Server::builder()
        .add_service(EventServiceServer::from_arc(node.clone()))
        .add_service(AdminServiceServer::from_arc(node));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
}

#[tokio::test]
async fn unavailable_with_a_leader_hint_redirects_to_the_leader() {
    let (a, b) = (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    // Bare host:port, as the server reports its api_addr.
    let nodes = vec![
        NodeInfo {
            id: 1,
            api_addr: a_addr.to_string(),
            raft_addr: String::new(),
            reachable: true,
            clock_offset_ms: None,
            ..Default::default()
        },
        NodeInfo {
            id: 2,
            api_addr: b_addr.to_string(),
            raft_addr: String::new(),
            reachable: true,
            clock_offset_ms: None,
            ..Default::default()
        },
    ];
    let (a_calls, b_calls) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    for (listener, id, calls) in [(a, 1, &a_calls), (b, 2, &b_calls)] {
        let node = Node {
            id,
            leader: 2,
            nodes: nodes.clone(),
            publishes: calls.clone(),
        };
        serve(listener, node);
    }

    // Only node 1 is known to the client.
    let client = Client::connect([format!("http://{a_addr}")]).await.unwrap();
    let published = client
        .publish(EventBuilder::new("t", "m").build())
        .await
        .unwrap();
    assert_eq!((published.partition, published.offset), (2, 41));
    assert_eq!(a_calls.load(Ordering::SeqCst), 1);
    assert_eq!(b_calls.load(Ordering::SeqCst), 1);
    // Later calls go straight to the leader.
    client
        .publish(EventBuilder::new("t", "m2").build())
        .await
        .unwrap();
    assert_eq!(a_calls.load(Ordering::SeqCst), 1);

    // An unimplemented call is not retried and keeps its code.
    let err = client.list_topics().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Other {
                code: tonic::Code::Unimplemented,
                ..
            }
        ),
        "{err:?}"
    );
}
