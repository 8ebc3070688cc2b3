//! `EventService`: publish, cancel, consume (Subscribe, Ack, Consume: see
//! `consume.rs`) and replay.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use chronos_partition::{
    event_of, CancelOutcome, PartitionError, PublishOutcome, ReplayQuery, ReplayRange,
    ReplayedEvent,
};
use chronos_proto::v1::event_service_server::EventService;
use chronos_proto::v1::{
    replay_request, AckRequest, AckResponse, CancelRequest, CancelResponse, ConsumeRequest,
    ConsumeResponse, Delivery, Event, PublishBatchRequest, PublishBatchResponse, PublishRequest,
    PublishResponse, ReplayEvent, ReplayRequest, SubscribeRequest, TimeRange,
};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::{consume, status, validate, Node};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct Events {
    node: Arc<Node>,
}

impl Events {
    pub fn new(node: Arc<Node>) -> Events {
        Events { node }
    }

    /// Publishes events that all belong to `partition`, with the node's timeout.
    async fn publish_to(
        &self,
        partition: u32,
        events: Vec<Event>,
        reschedule: bool,
    ) -> Result<Vec<PublishOutcome>, Status> {
        let p = &self.node.partitions[partition as usize];
        let publish = p.publish_with(events, reschedule);
        match tokio::time::timeout(self.node.publish_timeout, publish).await {
            Ok(result) => result.map_err(status::from_partition),
            Err(_) => Err(status::from_partition(PartitionError::Unavailable(
                format!(
                    "partition {partition} did not accept the write within {:?}",
                    self.node.publish_timeout
                ),
            ))),
        }
    }
}

fn response(partition: u32, message_id: String, o: PublishOutcome) -> PublishResponse {
    PublishResponse {
        partition,
        offset: o.offset,
        due_ts: o.due_ts,
        duplicate: o.duplicate,
        message_id,
    }
}

fn record(
    rpc: &'static str,
    started: Instant,
    outcomes: &[PublishOutcome],
    result: &Result<(), Status>,
) {
    let code = match result {
        Ok(()) => "ok".to_string(),
        Err(s) => format!("{:?}", s.code()),
    };
    metrics::counter!("chronos_publish_requests_total", "rpc" => rpc, "code" => code).increment(1);
    metrics::histogram!("chronos_publish_latency_seconds", "rpc" => rpc)
        .record(started.elapsed().as_secs_f64());
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
        let started = Instant::now();
        let req = request.into_inner();
        let event = req
            .event
            .ok_or_else(|| Status::invalid_argument("event: is required"))?;
        validate::event("event", &event, &self.node.limits)?;
        let partition = self.node.router.route(&event.key, &event.message_id);
        let message_id = event.message_id.clone();
        let result = self
            .publish_to(partition, vec![event], req.reschedule)
            .await;
        let outcomes = result.as_deref().unwrap_or_default();
        record(
            "Publish",
            started,
            outcomes,
            &result.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        let outcome = result?
            .into_iter()
            .next()
            .ok_or_else(|| Status::internal("partition returned no outcome"))?;
        Ok(Response::new(response(partition, message_id, outcome)))
    }

    async fn publish_batch(
        &self,
        request: Request<PublishBatchRequest>,
    ) -> Result<Response<PublishBatchResponse>, Status> {
        let started = Instant::now();
        let events = request.into_inner().events;
        validate::batch(&events, &self.node.limits)?;
        let mut ids = Vec::with_capacity(events.len());
        let mut by_partition: BTreeMap<u32, (Vec<usize>, Vec<Event>)> = BTreeMap::new();
        for (i, ev) in events.into_iter().enumerate() {
            let p = self.node.router.route(&ev.key, &ev.message_id);
            ids.push(ev.message_id.clone());
            let slot = by_partition.entry(p).or_default();
            slot.0.push(i);
            slot.1.push(ev);
        }
        // Each partition's share is one atomic append; shares run concurrently.
        let shares = by_partition.into_iter().map(|(p, (idx, evs))| async move {
            self.publish_to(p, evs, false)
                .await
                .map(|outcomes| (p, idx, outcomes))
        });
        let mut results: Vec<Option<PublishResponse>> = vec![None; ids.len()];
        let mut all = Vec::new();
        let mut failure = None;
        for share in futures::future::join_all(shares).await {
            match share {
                Ok((p, idx, outcomes)) => {
                    for (i, o) in idx.into_iter().zip(&outcomes) {
                        results[i] = Some(response(p, std::mem::take(&mut ids[i]), *o));
                    }
                    all.extend(outcomes);
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        let outcome = failure.map_or(Ok(()), Err);
        record("PublishBatch", started, &all, &outcome);
        // A failed share fails the call; shares that succeeded are stored, and a
        // retry of the whole batch deduplicates them.
        outcome?;
        let results = results.into_iter().map(Option::unwrap_or_default).collect();
        Ok(Response::new(PublishBatchResponse { results }))
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelResponse>, Status> {
        let req = request.into_inner();
        validate::topic("topic", &req.topic)?;
        validate::message_id("message_id", &req.message_id)?;
        let partition = self.node.router.route(&req.key, &req.message_id);
        let p = &self.node.partitions[partition as usize];
        let cancel = p.cancel(req.topic.clone(), req.message_id.clone());
        let outcome = match tokio::time::timeout(self.node.publish_timeout, cancel).await {
            Ok(result) => result.map_err(status::from_partition)?,
            Err(_) => {
                return Err(status::from_partition(PartitionError::Unavailable(
                    format!(
                        "partition {partition} did not answer the cancel within {:?}",
                        self.node.publish_timeout
                    ),
                )))
            }
        };
        if let Some(refused) = status::cancel_refused(outcome, &req.topic, &req.message_id) {
            return Err(refused);
        }
        let offset = match outcome {
            CancelOutcome::Cancelled { offset, .. }
            | CancelOutcome::AlreadyCancelled { offset } => offset,
            CancelOutcome::NotFound | CancelOutcome::AlreadyFired { .. } => 0,
        };
        metrics::counter!("chronos_cancel_requests_total").increment(1);
        Ok(Response::new(CancelResponse { partition, offset }))
    }

    type SubscribeStream = BoxStream<Delivery>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let sub = consume::subscribe(&self.node, "", request.into_inner()).await?;
        Ok(Response::new(sub.into_stream()))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let resp = consume::ack(&self.node, "", request.into_inner(), None).await?;
        Ok(Response::new(resp))
    }

    type ConsumeStream = BoxStream<ConsumeResponse>;

    async fn consume(
        &self,
        request: Request<Streaming<ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        let rx = consume::consume(self.node.clone(), request.into_inner()).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ReplayStream = BoxStream<ReplayEvent>;

    async fn replay(
        &self,
        request: Request<ReplayRequest>,
    ) -> Result<Response<Self::ReplayStream>, Status> {
        let req = request.into_inner();
        let topic = if req.topic.is_empty() {
            None
        } else {
            validate::topic("topic", &req.topic)?;
            Some(req.topic.clone())
        };
        let partitions = match req.partition_id {
            None | Some(-1) => self.node.partitions.clone(),
            Some(id) => vec![self.node.partition("partition_id", id.into())?.clone()],
        };
        let range = replay_range(req.range)?;
        let query = ReplayQuery {
            range,
            topic,
            key: (!req.key.is_empty()).then_some(req.key),
        };
        // Partitions one after another, each in offset order.
        let stream = futures::stream::iter(partitions).flat_map(move |p| {
            let id = p.id();
            ReceiverStream::new(p.replay(query.clone())).map(move |item| {
                item.map(|ev| replay_event(id, ev))
                    .map_err(status::from_partition)
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The requested range, checked: `to` (0 = no end) must not come before `from`.
fn replay_range(range: Option<replay_request::Range>) -> Result<ReplayRange, Status> {
    let time = |field: &str, r: TimeRange| -> Result<(i64, Option<i64>), Status> {
        if r.from_ts < 0 {
            return Err(Status::invalid_argument(format!(
                "{field}.from_ts: {} is negative",
                r.from_ts
            )));
        }
        if r.to_ts != 0 && r.to_ts < r.from_ts {
            return Err(Status::invalid_argument(format!(
                "{field}.to_ts: {} is before {field}.from_ts {}",
                r.to_ts, r.from_ts
            )));
        }
        Ok((r.from_ts, (r.to_ts != 0).then_some(r.to_ts)))
    };
    match range {
        Some(replay_request::Range::Offsets(r)) => {
            if r.to != 0 && r.to < r.from {
                return Err(Status::invalid_argument(format!(
                    "offsets.to: {} is before offsets.from {}",
                    r.to, r.from
                )));
            }
            Ok(ReplayRange::Offsets {
                from: r.from,
                to: (r.to != 0).then_some(r.to),
            })
        }
        Some(replay_request::Range::PublishTime(r)) => {
            let (from_ms, to_ms) = time("publish_time", r)?;
            Ok(ReplayRange::PublishTime { from_ms, to_ms })
        }
        Some(replay_request::Range::DueTime(r)) => {
            let (from_ms, to_ms) = time("due_time", r)?;
            Ok(ReplayRange::DueTime { from_ms, to_ms })
        }
        None => Err(Status::invalid_argument(
            "range: set one of offsets, publish_time or due_time",
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
