//! `DescribeEvent`: one event by id, as its partition's leader has applied
//! it: pending, fired or cancelled, and once fired where each consumer group
//! of its topic is with it.

use std::sync::Arc;
use std::time::Instant;

use chronos_access::{Action, Permission};
use chronos_partition::{event_of, Delivery, EventState, EventView, Partition};
use chronos_proto::v1::{
    DeliveryStatus, DescribeEventRequest, DescribeEventResponse, EventStatus, GroupDelivery,
};
use tonic::Status;

use crate::gateway::Incoming;
use crate::inspect::blocking;
use crate::{validate, Node};

pub(crate) async fn describe_event(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: DescribeEventRequest,
) -> Result<DescribeEventResponse, Status> {
    validate::topic("topic", &req.topic)?;
    validate::message_id("message_id", &req.message_id)?;
    node.guard.authorize(
        &incoming.caller,
        &Action::on_topic(Permission::Replay, &req.topic),
    )?;
    let partition = node.router.route(&req.key, &req.message_id);
    let deadline = Instant::now() + node.publish_timeout;
    let here = |p: Arc<Partition>, req: DescribeEventRequest| async move {
        let id = p.id();
        let (topic, message_id) = (req.topic.clone(), req.message_id.clone());
        let found = blocking("describing an event", move || {
            p.describe_event(&topic, &message_id)
        })
        .await?;
        match found {
            Some(view) => Ok(response(id, view)),
            None => Err(Status::not_found(format!(
                "message_id: no event {:?} in topic {:?} (never published, published with \
                 another key, or past the dedup window)",
                req.message_id, req.topic
            ))),
        }
    };
    node.on_leader_of(partition, incoming, deadline, &req, here, |r| r)
        .await
}

fn response(partition: u32, view: EventView) -> DescribeEventResponse {
    let status = match view.state {
        EventState::Pending => EventStatus::Pending,
        EventState::Fired => EventStatus::Fired,
        EventState::Cancelled => EventStatus::Cancelled,
    };
    DescribeEventResponse {
        status: status as i32,
        partition,
        offset: view.offset,
        due_ts: view.due_ts,
        fire_ts: view.fire_ts.unwrap_or(0),
        event: view.record.map(event_of),
        groups_unknown: view.groups.is_none(),
        groups: view
            .groups
            .unwrap_or_default()
            .into_iter()
            .map(|(group, delivery)| group_delivery(group, delivery))
            .collect(),
    }
}

fn group_delivery(group: String, delivery: Delivery) -> GroupDelivery {
    let (status, attempts, at_ts, reason) = match delivery {
        Delivery::Waiting => (DeliveryStatus::Waiting, 0, 0, String::new()),
        Delivery::InFlight {
            attempt,
            ack_deadline_ts,
        } => (
            DeliveryStatus::InFlight,
            attempt,
            ack_deadline_ts,
            String::new(),
        ),
        Delivery::RetryWait { attempt, retry_ts } => {
            (DeliveryStatus::RetryWait, attempt, retry_ts, String::new())
        }
        Delivery::Dead {
            attempts,
            reason,
            dead_ts,
        } => (DeliveryStatus::Dead, attempts, dead_ts, reason),
        Delivery::Acked => (DeliveryStatus::Acked, 0, 0, String::new()),
        Delivery::NotForGroup => (DeliveryStatus::NotForGroup, 0, 0, String::new()),
    };
    GroupDelivery {
        group,
        status: status as i32,
        attempts,
        at_ts,
        reason,
    }
}
