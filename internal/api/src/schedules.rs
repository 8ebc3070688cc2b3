//! Recurring schedules (`EventService`'s schedule RPCs).
//!
//! A schedule lives in the partition its id routes to; every operation runs
//! on that partition's leader (here, or forwarded as it is). Changes are
//! decided by the partition's log (`Partition::change_schedule`); reads are
//! of the leader's applied state.

use std::sync::Arc;
use std::time::Instant;

use chronos_access::{Action, Permission};
use chronos_partition::schedule::{
    format_ts, new_recurrence, now_ms, occurrence_event, recurrence_of, ScheduleApplied,
    ScheduleStatus, MAX_CATCH_UP,
};
use chronos_partition::Partition;
use chronos_proto::internal::schedule_command::Op;
use chronos_proto::internal::ScheduleRecord;
use chronos_proto::v1::{
    CreateScheduleRequest, CreateScheduleResponse, DeleteScheduleRequest, DeleteScheduleResponse,
    GetScheduleRequest, ListSchedulesRequest, ListSchedulesResponse, MissedRuns,
    PauseScheduleRequest, ResumeScheduleRequest, Schedule, ScheduleInfo, ScheduleResponse,
    TriggerScheduleRequest, TriggerScheduleResponse, UpdateScheduleRequest,
};
use prost::Message;
use tonic::Status;

use crate::gateway::Incoming;
use crate::status::invalid;
use crate::validate::{self, Limits};
use crate::{status, Node};

/// Longest schedule id: its occurrences' ids add 25 bytes and must fit the
/// message_id limit.
const MAX_SCHEDULE_ID_BYTES: usize = 100;
const MAX_JITTER_MS: i64 = 3_600_000;
const DEFAULT_UPCOMING: u32 = 5;
const MAX_UPCOMING: u32 = 100;
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

fn schedule_id(field: &str, id: &str) -> Result<(), Status> {
    validate::message_id(field, id)?;
    if id.len() > MAX_SCHEDULE_ID_BYTES {
        return Err(invalid(
            field,
            format!(
                "is {} bytes, the limit is {MAX_SCHEDULE_ID_BYTES}",
                id.len()
            ),
        ));
    }
    Ok(())
}

/// Every rule of a schedule, each failure naming its field.
fn check(spec: &Schedule, limits: &Limits) -> Result<(), Status> {
    schedule_id("schedule.schedule_id", &spec.schedule_id)?;
    // The occurrences are events: their rules apply (topic, key, payload, headers).
    let sample = occurrence_event(spec, format!("{}@x", spec.schedule_id), 1, format_ts(1));
    validate::event("schedule", &sample, limits)?;
    if spec.recurrence.is_none() {
        return Err(invalid(
            "schedule.recurrence",
            "is required: set one of cron, every_ms or times",
        ));
    }
    if spec.start_ts < 0 {
        return Err(invalid("schedule.start_ts", "must not be negative"));
    }
    if spec.end_ts < 0 {
        return Err(invalid("schedule.end_ts", "must not be negative"));
    }
    if !(0..=MAX_JITTER_MS).contains(&spec.jitter_ms) {
        return Err(invalid(
            "schedule.jitter_ms",
            format!("is {}; it must be 0 to {MAX_JITTER_MS}", spec.jitter_ms),
        ));
    }
    if MissedRuns::try_from(spec.missed_runs).is_err() {
        return Err(invalid(
            "schedule.missed_runs",
            format!("{} is not a missed-run policy", spec.missed_runs),
        ));
    }
    if spec.catch_up_limit > MAX_CATCH_UP {
        return Err(invalid(
            "schedule.catch_up_limit",
            format!("is {}; at most {MAX_CATCH_UP}", spec.catch_up_limit),
        ));
    }
    if let Err(e) = new_recurrence(spec, now_ms()) {
        let field = match e.field() {
            "every" => "every_ms",
            "start" => "start_ts",
            "end" => "end_ts",
            other => other,
        };
        let why = e.to_string();
        let why = why.split_once(": ").map_or(why.as_str(), |(_, w)| w);
        return Err(invalid(&format!("schedule.{field}"), why));
    }
    Ok(())
}

/// The schedule of a create or update: valid, and the caller may publish
/// to its topic.
fn checked<'s>(
    node: &Node,
    incoming: &Incoming,
    spec: Option<&'s Schedule>,
) -> Result<&'s Schedule, Status> {
    let spec = spec.ok_or_else(|| invalid("schedule", "is required"))?;
    check(spec, &node.limits)?;
    let action = Action::on_topic(Permission::Publish, &spec.topic);
    node.guard.authorize(&incoming.caller, &action)?;
    Ok(spec)
}

/// What a caller sees of a schedule.
fn info(partition: u32, record: &ScheduleRecord, spec: Schedule, upcoming: u32) -> ScheduleInfo {
    let upcoming_ts = match recurrence_of(&spec, record.created_ts) {
        Ok(rec) if !record.paused && record.next_ts > 0 => {
            rec.between(record.next_ts - 1, i64::MAX, upcoming as usize)
        }
        _ => Vec::new(),
    };
    ScheduleInfo {
        schedule: Some(spec),
        partition,
        paused: record.paused,
        next_ts: record.next_ts,
        upcoming_ts,
        occurrences: record.occurrences,
        last_ts: record.last_ts,
        created_ts: record.created_ts,
        updated_ts: record.updated_ts,
    }
}

fn info_of(partition: u32, applied: &ScheduleApplied) -> Result<ScheduleInfo, Status> {
    let raw = applied
        .record
        .as_deref()
        .ok_or_else(|| Status::internal("a schedule change applied without its record"))?;
    let (record, spec) = chronos_partition::schedule::decode_record(raw)
        .map_err(|e| Status::internal(format!("decoding a schedule: {e}")))?;
    Ok(info(partition, &record, spec, DEFAULT_UPCOMING))
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!("schedule_id: no schedule {id:?}"))
}

/// The schedule's record on this leader, or NOT_FOUND.
fn read(p: &Partition, id: &str) -> Result<(ScheduleRecord, Schedule), Status> {
    p.schedule(id)
        .map_err(status::from_partition)?
        .ok_or_else(|| not_found(id))
}

async fn change(p: &Partition, op: Op) -> Result<ScheduleApplied, Status> {
    p.change_schedule(op).await.map_err(status::from_partition)
}

/// Runs `here` on the leader of the schedule's partition.
async fn on_schedule<R, T, H, HF>(
    node: &Arc<Node>,
    incoming: &Incoming,
    id: &str,
    req: &R,
    here: H,
) -> Result<T, Status>
where
    R: crate::forward::Forward<Reply = T>,
    H: Fn(Arc<Partition>, R) -> HF,
    HF: std::future::Future<Output = Result<T, Status>>,
{
    let partition = node.router.route("", id);
    let deadline = Instant::now() + node.publish_timeout;
    node.on_leader_of(partition, incoming, deadline, req, here, |r| r)
        .await
}

pub async fn create(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: CreateScheduleRequest,
) -> Result<CreateScheduleResponse, Status> {
    let spec = checked(node, incoming, req.schedule.as_ref())?;
    let guard = &node.guard;
    let here = |p: Arc<Partition>, req: CreateScheduleRequest| async move {
        let spec = req.schedule.unwrap_or_default();
        let id = spec.schedule_id.clone();
        let applied = change(&p, Op::Create(spec.encode_to_vec().into())).await?;
        match applied.status {
            ScheduleStatus::Conflict => Err(Status::already_exists(format!(
                "schedule_id: schedule {id:?} exists with different content; \
                 change it with UpdateSchedule or delete it first"
            ))),
            status => Ok(CreateScheduleResponse {
                schedule: Some(info_of(p.id(), &applied)?),
                existed: status == ScheduleStatus::Existed,
            }),
        }
    };
    let id = spec.schedule_id.clone();
    let resp = on_schedule(node, incoming, &id, &req, here).await;
    guard.audit(
        &incoming.caller,
        "create_schedule",
        &format!("schedule_id={id}"),
        &resp,
    );
    resp
}

pub async fn update(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: UpdateScheduleRequest,
) -> Result<ScheduleResponse, Status> {
    let spec = checked(node, incoming, req.schedule.as_ref())?;
    let guard = &node.guard;
    let caller = &incoming.caller;
    let here = |p: Arc<Partition>, req: UpdateScheduleRequest| async move {
        let spec = req.schedule.unwrap_or_default();
        let (_, old) = read(&p, &spec.schedule_id)?;
        // Moving a schedule off a topic needs the right to publish there too.
        guard.authorize(caller, &Action::on_topic(Permission::Publish, &old.topic))?;
        let applied = change(&p, Op::Update(spec.encode_to_vec().into())).await?;
        if applied.status == ScheduleStatus::NotFound {
            return Err(not_found(&spec.schedule_id));
        }
        Ok(ScheduleResponse {
            schedule: Some(info_of(p.id(), &applied)?),
        })
    };
    let id = spec.schedule_id.clone();
    let resp = on_schedule(node, incoming, &id, &req, here).await;
    guard.audit(
        caller,
        "update_schedule",
        &format!("schedule_id={id}"),
        &resp,
    );
    resp
}

/// Pause, resume or delete on the leader: the caller may publish to the
/// schedule's topic. The schedule after it (None when deleted).
async fn change_by_id(
    p: &Partition,
    guard: &crate::guard::Guard,
    caller: &crate::guard::Caller,
    op: Op,
) -> Result<Option<ScheduleInfo>, Status> {
    let id = match &op {
        Op::Pause(id) | Op::Resume(id) | Op::Delete(id) => id.clone(),
        Op::Create(_) | Op::Update(_) => String::new(),
    };
    let (_, spec) = read(p, &id)?;
    guard.authorize(caller, &Action::on_topic(Permission::Publish, &spec.topic))?;
    let applied = change(p, op).await?;
    match applied.status {
        ScheduleStatus::NotFound => Err(not_found(&id)),
        ScheduleStatus::Deleted => Ok(None),
        _ => Ok(Some(info_of(p.id(), &applied)?)),
    }
}

/// A pause, resume or delete request: routed by its id, run on the leader.
async fn change_routed<R>(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: R,
    what: &'static str,
    id_of: fn(&R) -> &str,
    op: fn(String) -> Op,
    reply: fn(Option<ScheduleInfo>) -> R::Reply,
) -> Result<R::Reply, Status>
where
    R: crate::forward::Forward,
{
    let id = id_of(&req).to_string();
    schedule_id("schedule_id", &id)?;
    let (guard, caller) = (&node.guard, &incoming.caller);
    let here = |p: Arc<Partition>, r: R| async move {
        let schedule = change_by_id(&p, guard, caller, op(id_of(&r).to_string())).await?;
        Ok(reply(schedule))
    };
    let resp = on_schedule(node, incoming, &id, &req, here).await;
    guard.audit(caller, what, &format!("schedule_id={id}"), &resp);
    resp
}

pub async fn pause(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: PauseScheduleRequest,
) -> Result<ScheduleResponse, Status> {
    fn id_of(r: &PauseScheduleRequest) -> &str {
        &r.schedule_id
    }
    let reply = |schedule| ScheduleResponse { schedule };
    change_routed(
        node,
        incoming,
        req,
        "pause_schedule",
        id_of,
        Op::Pause,
        reply,
    )
    .await
}

pub async fn resume(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: ResumeScheduleRequest,
) -> Result<ScheduleResponse, Status> {
    fn id_of(r: &ResumeScheduleRequest) -> &str {
        &r.schedule_id
    }
    let reply = |schedule| ScheduleResponse { schedule };
    change_routed(
        node,
        incoming,
        req,
        "resume_schedule",
        id_of,
        Op::Resume,
        reply,
    )
    .await
}

pub async fn delete(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: DeleteScheduleRequest,
) -> Result<DeleteScheduleResponse, Status> {
    fn id_of(r: &DeleteScheduleRequest) -> &str {
        &r.schedule_id
    }
    let reply = |_| DeleteScheduleResponse {};
    change_routed(
        node,
        incoming,
        req,
        "delete_schedule",
        id_of,
        Op::Delete,
        reply,
    )
    .await
}

pub async fn get(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: GetScheduleRequest,
) -> Result<ScheduleResponse, Status> {
    schedule_id("schedule_id", &req.schedule_id)?;
    if req.upcoming > MAX_UPCOMING {
        return Err(invalid(
            "upcoming",
            format!("is {}; at most {MAX_UPCOMING}", req.upcoming),
        ));
    }
    let guard = &node.guard;
    let caller = &incoming.caller;
    let here = |p: Arc<Partition>, req: GetScheduleRequest| async move {
        let (record, spec) = read(&p, &req.schedule_id)?;
        guard.authorize(caller, &Action::on_topic(Permission::Describe, &spec.topic))?;
        let upcoming = match req.upcoming {
            0 => DEFAULT_UPCOMING,
            n => n,
        };
        Ok(ScheduleResponse {
            schedule: Some(info(p.id(), &record, spec, upcoming)),
        })
    };
    let id = req.schedule_id.clone();
    on_schedule(node, incoming, &id, &req, here).await
}

/// One partition per page: the token is `partition:last_schedule_id`.
pub async fn list(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: ListSchedulesRequest,
) -> Result<ListSchedulesResponse, Status> {
    if !req.topic.is_empty() {
        validate::topic("topic", &req.topic)?;
    }
    let size = validate::page_size(req.page_size, DEFAULT_PAGE, MAX_PAGE)?;
    let partitions = node.router.partitions();
    let (partition, after) = match req.page_token.split_once(':') {
        None if req.page_token.is_empty() => (0, String::new()),
        Some((p, after)) => match p.parse::<u32>() {
            Ok(p) if p < partitions => (p, after.to_string()),
            _ => return Err(invalid("page_token", "is not a token this list gave")),
        },
        None => return Err(invalid("page_token", "is not a token this list gave")),
    };
    let action = match req.topic.as_str() {
        "" => Action::cluster(Permission::Describe),
        topic => Action::on_topic(Permission::Describe, topic),
    };
    node.guard.authorize(&incoming.caller, &action)?;
    let fwd = ListSchedulesRequest {
        page_token: format!("{partition}:{after}"),
        ..req.clone()
    };
    let here = |p: Arc<Partition>, req: ListSchedulesRequest| async move {
        let after = req
            .page_token
            .split_once(':')
            .map(|(_, a)| a.to_string())
            .unwrap_or_default();
        let rows = p
            .schedules(&req.topic, &after, size)
            .map_err(status::from_partition)?;
        let last = rows.last().map(|(_, s)| s.schedule_id.clone());
        let schedules: Vec<ScheduleInfo> = rows
            .into_iter()
            .map(|(record, spec)| info(p.id(), &record, spec, 0))
            .collect();
        let next_page_token = match last {
            Some(last) if schedules.len() >= size => format!("{}:{last}", p.id()),
            _ if p.id() + 1 < partitions => format!("{}:", p.id() + 1),
            _ => String::new(),
        };
        Ok(ListSchedulesResponse {
            schedules,
            next_page_token,
        })
    };
    let deadline = Instant::now() + node.publish_timeout;
    node.on_leader_of(partition, incoming, deadline, &fwd, here, |r| r)
        .await
}

pub async fn trigger(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: TriggerScheduleRequest,
) -> Result<TriggerScheduleResponse, Status> {
    schedule_id("schedule_id", &req.schedule_id)?;
    let guard = &node.guard;
    let caller = &incoming.caller;
    let here = |p: Arc<Partition>, req: TriggerScheduleRequest| async move {
        let (_, spec) = read(&p, &req.schedule_id)?;
        guard.authorize(caller, &Action::on_topic(Permission::Publish, &spec.topic))?;
        let now = now_ms();
        let message_id = format!("{}@trigger-{}", spec.schedule_id, format_ts(now));
        let mut event = occurrence_event(&spec, message_id.clone(), now, format_ts(now));
        event.schedule_ts = now;
        let outcome = p
            .publish(vec![event])
            .await
            .map_err(status::from_partition)?;
        let offset = outcome.first().map_or(0, |o| o.offset);
        Ok(TriggerScheduleResponse {
            message_id,
            partition: p.id(),
            offset,
        })
    };
    let id = req.schedule_id.clone();
    let resp = on_schedule(node, incoming, &id, &req, here).await;
    guard.audit(
        caller,
        "trigger_schedule",
        &format!("schedule_id={id}"),
        &resp,
    );
    resp
}
