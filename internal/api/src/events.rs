//! `EventService`: publish, cancel, consume (Subscribe, Ack, Consume: see
//! `consume.rs`) and replay.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronos_access::{Action, Permission};
use chronos_partition::{
    event_of, Partition, PartitionError, PublishOutcome, ReplayQuery, ReplayRange, ReplayedEvent,
};
use chronos_proto::v1::event_service_server::EventService;
use chronos_proto::v1::{
    replay_request, AckRequest, AckResponse, CancelBatchRequest, CancelBatchResponse,
    CancelRequest, CancelResponse, ConsumeRequest, ConsumeResponse, Delivery, Event,
    PublishBatchRequest, PublishBatchResponse, PublishRequest, PublishResponse, ReplayEvent,
    ReplayRequest, SubscribeRequest,
};
use chronos_proto::v1::{
    CountPendingRequest, CountPendingResponse, DescribeEventRequest, DescribeEventResponse,
    ListPendingRequest, ListPendingResponse, SearchEventsRequest, SearchEventsResponse,
};
use chronos_proto::v1::{
    CreateScheduleRequest, CreateScheduleResponse, DeleteScheduleRequest, DeleteScheduleResponse,
    GetScheduleRequest, ListSchedulesRequest, ListSchedulesResponse, PauseScheduleRequest,
    ResumeScheduleRequest, ScheduleResponse, TriggerScheduleRequest, TriggerScheduleResponse,
    UpdateScheduleRequest,
};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::gateway::Incoming;
use crate::status::invalid;
use crate::{cancel, consume, describe, inspect, schedules, shares, status, validate, Node};

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct Events {
    node: Arc<Node>,
}

impl Events {
    pub fn new(node: Arc<Node>) -> Events {
        Events { node }
    }

    /// Publishes events that all belong to `partition` on its leader (here, or
    /// forwarded), within the node's publish timeout.
    async fn publish_to(
        &self,
        partition: u32,
        events: Vec<Event>,
        reschedule: bool,
        incoming: &Incoming,
    ) -> Result<Vec<PublishResponse>, Status> {
        let deadline = Instant::now() + self.node.publish_timeout;
        if self.node.cluster.is_none() {
            // A single node holds and leads every partition: nothing to
            // forward or retry, so the events need no spare copy.
            let p = self.node.local(partition).ok_or_else(|| {
                Status::internal(format!("partition {partition} is not open on this node"))
            })?;
            let ids = message_ids(&events);
            let outcomes = publish_here(&p, events, reschedule).await?;
            return Ok(responses(partition, ids, outcomes));
        }
        // A share may be retried (on the next leader): each attempt takes a copy.
        if reschedule || events.len() == 1 {
            let req = PublishRequest {
                event: events.into_iter().next(),
                reschedule,
            };
            let here = |p: Arc<Partition>, req: PublishRequest| async move {
                let events: Vec<Event> = req.event.into_iter().collect();
                let ids = message_ids(&events);
                let outcomes = publish_here(&p, events, req.reschedule).await?;
                Ok(responses(partition, ids, outcomes))
            };
            self.node
                .on_leader_of(partition, incoming, deadline, &req, here, |r| vec![r])
                .await
        } else {
            let req = PublishBatchRequest { events };
            let here = |p: Arc<Partition>, req: PublishBatchRequest| async move {
                let ids = message_ids(&req.events);
                let outcomes = publish_here(&p, req.events, false).await?;
                Ok(responses(partition, ids, outcomes))
            };
            self.node
                .on_leader_of(partition, incoming, deadline, &req, here, |r| r.results)
                .await
        }
    }
}

/// The events' message ids, kept for the responses while the events move
/// into the partition (no second copy of the payloads).
fn message_ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.message_id.clone()).collect()
}

/// One response per published event, in order.
fn responses(
    partition: u32,
    ids: Vec<String>,
    outcomes: Vec<PublishOutcome>,
) -> Vec<PublishResponse> {
    ids.into_iter()
        .zip(outcomes)
        .map(|(id, o)| response(partition, id, o))
        .collect()
}

/// Publishes on this node's replica, which leads; records the request metrics.
async fn publish_here(
    p: &Partition,
    events: Vec<Event>,
    reschedule: bool,
) -> Result<Vec<PublishOutcome>, Status> {
    let publish = p.publish_with(events, reschedule);
    let result = match tokio::time::timeout(PARTITION_TIMEOUT, publish).await {
        Ok(result) => result.map_err(status::from_partition),
        Err(_) => Err(status::from_partition(PartitionError::Unavailable(
            format!(
                "partition {} did not accept the write within {PARTITION_TIMEOUT:?}",
                p.id()
            ),
        ))),
    };
    if let Ok(outcomes) = &result {
        record_events(outcomes);
    }
    result
}

/// Longest a write waits on this node's replica (a leader without a quorum
/// cannot commit); the caller's own deadline may be shorter.
const PARTITION_TIMEOUT: Duration = Duration::from_secs(10);

fn response(partition: u32, message_id: String, o: PublishOutcome) -> PublishResponse {
    PublishResponse {
        partition,
        offset: o.offset,
        due_ts: o.due_ts,
        duplicate: o.duplicate,
        message_id,
    }
}

/// Request count and latency of one Publish or PublishBatch RPC, at the node
/// it arrived at.
fn record_request<T>(rpc: &'static str, started: Instant, result: &Result<T, Status>) {
    let code = match result {
        Ok(_) => "ok".to_string(),
        Err(s) => format!("{:?}", s.code()),
    };
    metrics::counter!("chronos_publish_requests_total", "rpc" => rpc, "code" => code).increment(1);
    metrics::histogram!("chronos_publish_latency_seconds", "rpc" => rpc)
        .record(started.elapsed().as_secs_f64());
}

/// Events stored (new or duplicate), at the node that leads their partition.
fn record_events(outcomes: &[PublishOutcome]) {
    let dups = outcomes.iter().filter(|o| o.duplicate).count() as u64;
    metrics::counter!("chronos_publish_events_total", "outcome" => "new")
        .increment(outcomes.len() as u64 - dups);
    metrics::counter!("chronos_publish_events_total", "outcome" => "duplicate").increment(dups);
}

#[tonic::async_trait]
impl EventService for Events {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let req = request.into_inner();
        let event = req.event.ok_or_else(|| invalid("event", "is required"))?;
        validate::event("event", &event, &self.node.limits)?;
        let guard = &self.node.guard;
        guard.authorize(
            &incoming.caller,
            &Action::on_topic(Permission::Publish, &event.topic),
        )?;
        guard.charge_publish(&incoming.caller, 1, event.payload.len() as u64)?;
        let started = Instant::now();
        let partition = self.node.router.route(&event.key, &event.message_id);
        let result = self
            .publish_to(partition, vec![event], req.reschedule, &incoming)
            .await
            .and_then(|r| {
                r.into_iter()
                    .next()
                    .ok_or_else(|| Status::internal("partition returned no outcome"))
            });
        record_request("Publish", started, &result);
        result.map(Response::new)
    }

    async fn publish_batch(
        &self,
        request: Request<PublishBatchRequest>,
    ) -> Result<Response<PublishBatchResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let started = Instant::now();
        let events = request.into_inner().events;
        validate::batch(&events, &self.node.limits)?;
        let guard = &self.node.guard;
        let topics: BTreeSet<&str> = events.iter().map(|e| e.topic.as_str()).collect();
        for topic in topics {
            guard.authorize(
                &incoming.caller,
                &Action::on_topic(Permission::Publish, topic),
            )?;
        }
        let bytes = events.iter().map(|e| e.payload.len() as u64).sum();
        guard.charge_publish(&incoming.caller, events.len() as u64, bytes)?;
        // Each partition's share is one atomic append (on its leader); shares
        // run concurrently. A failed share fails the call; shares that
        // succeeded are stored, and a retry of the whole batch deduplicates them.
        let incoming = &incoming;
        let router = &self.node.router;
        let result = shares::run_by_partition(
            events,
            |ev| router.route(&ev.key, &ev.message_id),
            |p, evs| self.publish_to(p, evs, false, incoming),
        )
        .await
        .map(|results| PublishBatchResponse { results });
        record_request("PublishBatch", started, &result);
        result.map(Response::new)
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let resp = cancel::one(&self.node, &incoming, request.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn cancel_batch(
        &self,
        request: Request<CancelBatchRequest>,
    ) -> Result<Response<CancelBatchResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let resp = cancel::batch(&self.node, &incoming, request.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn create_schedule(
        &self,
        request: Request<CreateScheduleRequest>,
    ) -> Result<Response<CreateScheduleResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let resp = schedules::create(&self.node, &incoming, request.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn update_schedule(
        &self,
        request: Request<UpdateScheduleRequest>,
    ) -> Result<Response<ScheduleResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let resp = schedules::update(&self.node, &incoming, request.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn pause_schedule(
        &self,
        request: Request<PauseScheduleRequest>,
    ) -> Result<Response<ScheduleResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let resp = schedules::pause(&self.node, &incoming, request.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn resume_schedule(
        &self,
        request: Request<ResumeScheduleRequest>,
    ) -> Result<Response<ScheduleResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let resp = schedules::resume(&self.node, &incoming, request.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn delete_schedule(
        &self,
        request: Request<DeleteScheduleRequest>,
    ) -> Result<Response<DeleteScheduleResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let resp = schedules::delete(&self.node, &incoming, request.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn get_schedule(
        &self,
        request: Request<GetScheduleRequest>,
    ) -> Result<Response<ScheduleResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let resp = schedules::get(&self.node, &incoming, request.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let resp = schedules::list(&self.node, &incoming, request.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn trigger_schedule(
        &self,
        request: Request<TriggerScheduleRequest>,
    ) -> Result<Response<TriggerScheduleResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let resp = schedules::trigger(&self.node, &incoming, request.into_inner()).await?;
        Ok(Response::new(resp))
    }

    type SubscribeStream = BoxStream<Delivery>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let sub = consume::subscribe(&self.node, &incoming, "", request.into_inner()).await?;
        Ok(Response::new(sub.into_stream()))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let resp = consume::ack(&self.node, &incoming, "", request.into_inner(), None).await?;
        Ok(Response::new(resp))
    }

    type ConsumeStream = BoxStream<ConsumeResponse>;

    async fn consume(
        &self,
        request: Request<Streaming<ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let rx = consume::consume(self.node.clone(), incoming, request.into_inner()).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn search_events(
        &self,
        request: Request<SearchEventsRequest>,
    ) -> Result<Response<SearchEventsResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let page = inspect::search(&self.node, &incoming, request.into_inner()).await;
        Ok(Response::new(page?))
    }

    async fn list_pending(
        &self,
        request: Request<ListPendingRequest>,
    ) -> Result<Response<ListPendingResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let page = inspect::list_pending(&self.node, &incoming, request.into_inner()).await;
        Ok(Response::new(page?))
    }

    async fn describe_event(
        &self,
        request: Request<DescribeEventRequest>,
    ) -> Result<Response<DescribeEventResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let found = describe::describe_event(&self.node, &incoming, request.into_inner()).await;
        Ok(Response::new(found?))
    }

    async fn count_pending(
        &self,
        request: Request<CountPendingRequest>,
    ) -> Result<Response<CountPendingResponse>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let counts = inspect::count_pending(&self.node, &incoming, request.into_inner()).await;
        Ok(Response::new(counts?))
    }

    type ReplayStream = BoxStream<ReplayEvent>;

    async fn replay(
        &self,
        request: Request<ReplayRequest>,
    ) -> Result<Response<Self::ReplayStream>, Status> {
        let incoming = Incoming::of(&request, self.node.router.partitions())?;
        let req = request.into_inner();
        if !req.topic.is_empty() {
            validate::topic("topic", &req.topic)?;
        }
        // Authorized before the range and filters are checked, as Replay
        // always was.
        let action = Action {
            permission: Permission::Replay,
            topic: (!req.topic.is_empty()).then_some(req.topic.as_str()),
            group: None,
        };
        self.node.guard.authorize(&incoming.caller, &action)?;
        let query = inspect::replay_query(&req)?;
        let partitions = match req.partition_id {
            None | Some(-1) => self.node.all_partitions(),
            Some(id) => vec![self
                .node
                .partition_id(|| "partition_id".into(), id.into())?],
        };
        // Partitions one after another, each in offset order, each from its leader.
        let node = self.node.clone();
        let stream = futures::stream::iter(partitions)
            .then(move |p| {
                let (node, incoming, query) = (node.clone(), incoming.clone(), query.clone());
                let req = ReplayRequest {
                    partition_id: Some(p as i32),
                    ..req.clone()
                };
                async move { open_replay(&node, p, &incoming, query, req).await }
            })
            .flat_map(|opened| match opened {
                Ok(stream) => stream,
                Err(status) => Box::pin(futures::stream::once(async { Err(status) })),
            });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Cancels on this node's replica, which leads.
/// Partition `p`'s replay stream, from its leader.
pub(crate) async fn open_replay(
    node: &Arc<Node>,
    p: u32,
    incoming: &Incoming,
    query: ReplayQuery,
    req: ReplayRequest,
) -> Result<BoxStream<ReplayEvent>, Status> {
    let deadline = Instant::now() + node.publish_timeout;
    let here = |part: Arc<Partition>, _req: ReplayRequest| {
        let query = query.clone();
        let slot = node.replays.try_reader();
        async move {
            let slot = slot.map_err(status::from_partition)?;
            let stream: BoxStream<ReplayEvent> = Box::pin(
                ReceiverStream::new(part.replay(query, slot)).map(move |item| {
                    item.map(|ev| replay_event(p, ev))
                        .map_err(status::from_partition)
                }),
            );
            Ok(stream)
        }
    };
    let there = |stream: Streaming<ReplayEvent>| -> BoxStream<ReplayEvent> { Box::pin(stream) };
    node.on_leader_of(p, incoming, deadline, &req, here, there)
        .await
}

/// The requested range, checked: `to` (0 = no end) must not come before `from`.
pub(crate) fn replay_range(range: Option<replay_request::Range>) -> Result<ReplayRange, Status> {
    match range {
        Some(replay_request::Range::Offsets(r)) => {
            if r.to != 0 && r.to < r.from {
                return Err(invalid(
                    "offsets.to",
                    format!("{} is before offsets.from {}", r.to, r.from),
                ));
            }
            Ok(ReplayRange::Offsets {
                from: r.from,
                to: (r.to != 0).then_some(r.to),
            })
        }
        Some(replay_request::Range::PublishTime(r)) => {
            let (from_ms, to_ms) = validate::time_range("publish_time", &r)?;
            Ok(ReplayRange::PublishTime { from_ms, to_ms })
        }
        Some(replay_request::Range::DueTime(r)) => {
            let (from_ms, to_ms) = validate::time_range("due_time", &r)?;
            Ok(ReplayRange::DueTime { from_ms, to_ms })
        }
        None => Err(invalid(
            "range",
            "set one of offsets, publish_time or due_time",
        )),
    }
}

fn replay_event(partition: u32, ev: ReplayedEvent) -> ReplayEvent {
    let due_ts = ev.record.due_ts;
    ReplayEvent {
        event: Some(event_of(ev.record)),
        partition,
        offset: ev.offset,
        publish_ts: ev.publish_ts,
        due_ts,
    }
}
