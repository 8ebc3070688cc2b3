//! The HTTP/JSON API, `/v1/...` on the HTTP port.
//!
//! Each route is one method of the gRPC services, called in-process: the
//! request is the method's protobuf message in the protobuf JSON mapping
//! (built from the path, the query string and the body), and it goes through
//! the same authentication, validation, routing to leaders and error mapping
//! as over gRPC. There is no second copy of any operation here, only the
//! route table, the JSON ⇄ message mapping and the error body.
//! Not here: the health, readiness and metrics endpoints and the listener
//! (the `chronos` binary), the web console (`chronos-console`).

mod input;
mod openapi;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use chronos_api::guard::Gate;
use chronos_api::{Admin, Events, Node};
use chronos_proto::v1::admin_service_server::AdminService;
use chronos_proto::v1::event_service_server::EventService;
use chronos_proto::v1::*;
use futures::{Stream, StreamExt};
use serde::Serialize;
use tonic::service::Interceptor;
use tonic::{Code, Status};

pub use input::Input;

/// One route: an HTTP method and path template mapped onto a gRPC method.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// axum's template: `{name}` captures one segment.
    pub path: &'static str,
    /// `Service.Method`.
    pub rpc: &'static str,
    pub request: &'static str,
    pub response: &'static str,
    /// The request field the body (and the path's parameters) fill; empty:
    /// the whole request.
    pub body: &'static str,
    pub summary: &'static str,
    /// A server stream: the answer is `response` messages, one JSON object
    /// per line (`application/x-ndjson`), for as long as the caller reads.
    pub stream: bool,
}

/// The services a route calls, and how a caller is authenticated.
pub struct Api {
    events: Events,
    admin: Admin,
    gate: Gate,
    body_limit: usize,
}

macro_rules! routes {
    ($( $method:ident $path:literal $(body $body:literal)? => $svc:ident . $call:ident ($req:ident) -> $resp:ident $([$stream:ident])?, $rpc:literal, $summary:literal; )*) => {
        /// Every route of the API, in the order the OpenAPI document lists them.
        pub const ROUTES: &[Route] = &[ $( Route {
            method: stringify!($method),
            path: $path,
            rpc: $rpc,
            request: stringify!($req),
            response: stringify!($resp),
            body: routes!(@body $($body)?),
            summary: $summary,
            stream: routes!(@stream $($stream)?),
        }, )* ];

        fn api_routes(mut router: axum::Router<Arc<Api>>) -> axum::Router<Arc<Api>> {
            let mut paths: BTreeMap<&'static str, MethodRouter<Arc<Api>>> = BTreeMap::new();
            $(
                let handler = on(MethodFilter::$method, |State(api): State<Arc<Api>>, input: Input| async move {
                    let route = route_of(stringify!($method), $path);
                    let request = match input.message::<$req>(route, api.body_limit).await {
                        Ok(r) => r,
                        Err(status) => return error(&status),
                    };
                    routes!(@answer api, request, $svc, $call $(, $stream)?)
                });
                let merged = match paths.remove($path) {
                    Some(other) => other.merge(handler),
                    None => handler,
                };
                paths.insert($path, merged);
            )*
            for (path, methods) in paths {
                router = router.route(path, methods.fallback(no_route));
            }
            router
        }
    };
    (@body $body:literal) => { $body };
    (@body) => { "" };
    (@stream stream) => { true };
    (@stream) => { false };
    (@answer $api:ident, $request:ident, $svc:ident, $call:ident, stream) => {
        $api.stream($request, |r| $api.$svc.$call(r)).await
    };
    (@answer $api:ident, $request:ident, $svc:ident, $call:ident) => {
        $api.call($request, |r| $api.$svc.$call(r)).await
    };
}

routes! {
    POST "/v1/events" body "event" => events.publish(PublishRequest) -> PublishResponse,
        "EventService.Publish", "Publish one event (the body is the event; `?reschedule=true` moves a pending one)";
    POST "/v1/events/batch" => events.publish_batch(PublishBatchRequest) -> PublishBatchResponse,
        "EventService.PublishBatch", "Publish events, one result per event in request order";
    POST "/v1/events/cancel" => events.cancel(CancelRequest) -> CancelResponse,
        "EventService.Cancel", "Cancel a pending event";
    POST "/v1/events/cancel-batch" => events.cancel_batch(CancelBatchRequest) -> CancelBatchResponse,
        "EventService.CancelBatch", "Cancel pending events, one result per cancel in request order";
    DELETE "/v1/topics/{topic}/events/{message_id}" => events.cancel(CancelRequest) -> CancelResponse,
        "EventService.Cancel", "Cancel a pending event (`?key=` if it was published with one)";
    GET "/v1/topics/{topic}/events" => events.search_events(SearchEventsRequest) -> SearchEventsResponse,
        "EventService.SearchEvents", "Stored events of a topic, filtered, in pages";
    GET "/v1/topics/{topic}/events/{message_id}" => events.describe_event(DescribeEventRequest) -> DescribeEventResponse,
        "EventService.DescribeEvent", "One event: pending, fired or cancelled, and where each consumer group is with it (`?key=` if published with one)";
    GET "/v1/topics/{topic}/pending" => events.list_pending(ListPendingRequest) -> ListPendingResponse,
        "EventService.ListPending", "Events waiting for their due time, in due order, in pages";
    GET "/v1/topics/{topic}/pending/histogram" => events.count_pending(CountPendingRequest) -> CountPendingResponse,
        "EventService.CountPending", "How many events come due in each bucket of a due-time range";
    POST "/v1/schedules" body "schedule" => events.create_schedule(CreateScheduleRequest) -> CreateScheduleResponse,
        "EventService.CreateSchedule", "Create a recurring schedule (the body is the schedule)";
    GET "/v1/schedules" => events.list_schedules(ListSchedulesRequest) -> ListSchedulesResponse,
        "EventService.ListSchedules", "Schedules, by topic, in pages";
    GET "/v1/schedules/{schedule_id}" => events.get_schedule(GetScheduleRequest) -> ScheduleResponse,
        "EventService.GetSchedule", "A schedule and its next occurrences (`?upcoming=`)";
    PUT "/v1/schedules/{schedule_id}" body "schedule" => events.update_schedule(UpdateScheduleRequest) -> ScheduleResponse,
        "EventService.UpdateSchedule", "Replace a schedule (the body is the schedule)";
    DELETE "/v1/schedules/{schedule_id}" => events.delete_schedule(DeleteScheduleRequest) -> DeleteScheduleResponse,
        "EventService.DeleteSchedule", "Delete a schedule: it never fires again";
    POST "/v1/schedules/{schedule_id}/pause" => events.pause_schedule(PauseScheduleRequest) -> ScheduleResponse,
        "EventService.PauseSchedule", "Pause a schedule";
    POST "/v1/schedules/{schedule_id}/resume" => events.resume_schedule(ResumeScheduleRequest) -> ScheduleResponse,
        "EventService.ResumeSchedule", "Resume a paused schedule";
    POST "/v1/schedules/{schedule_id}/trigger" => events.trigger_schedule(TriggerScheduleRequest) -> TriggerScheduleResponse,
        "EventService.TriggerSchedule", "Fire one extra occurrence now";
    GET "/v1/topics/{topic}/groups/{consumer_group}/subscribe" => events.subscribe(SubscribeRequest) -> Delivery [stream],
        "EventService.Subscribe", "Join a consumer group and receive its deliveries, one JSON object per line, while the connection stays open (`?max_inflight=`, `?start=`); settle them with the ack route";
    POST "/v1/groups/{consumer_group}/ack" => events.ack(AckRequest) -> AckResponse,
        "EventService.Ack", "Ack or nack deliveries by `delivery_id` (`items`: `{delivery_id, nack, nack_delay_ms}`)";
    GET "/v1/topics" => admin.list_topics(ListTopicsRequest) -> ListTopicsResponse,
        "AdminService.ListTopics", "Topics and their pending counts";
    GET "/v1/partitions" => admin.list_partitions(ListPartitionsRequest) -> ListPartitionsResponse,
        "AdminService.ListPartitions", "Partitions: leader, term, log and pending";
    GET "/v1/cluster" => admin.cluster_status(ClusterStatusRequest) -> ClusterStatusResponse,
        "AdminService.ClusterStatus", "Nodes, partitions, clock offsets and moves";
    POST "/v1/cluster/rebalance" => admin.rebalance(RebalanceRequest) -> RebalanceResponse,
        "AdminService.Rebalance", "Hand partitions to their preferred leaders";
    POST "/v1/cluster/nodes" => admin.add_node(AddNodeRequest) -> AddNodeResponse,
        "AdminService.AddNode", "Add a node to the cluster";
    DELETE "/v1/cluster/nodes/{node_id}" => admin.remove_node(RemoveNodeRequest) -> RemoveNodeResponse,
        "AdminService.RemoveNode", "Move a node's replicas away and remove it";
    GET "/v1/groups" => admin.list_groups(ListGroupsRequest) -> ListGroupsResponse,
        "AdminService.ListGroups", "Consumer groups (`?topic=`): lag, in flight, members";
    GET "/v1/topics/{topic}/groups/{consumer_group}" => admin.describe_group(DescribeGroupRequest) -> DescribeGroupResponse,
        "AdminService.DescribeGroup", "One consumer group";
    POST "/v1/topics/{topic}/groups/{consumer_group}/seek" => admin.seek_group(SeekGroupRequest) -> SeekGroupResponse,
        "AdminService.SeekGroup", "Redeliver events due at or after `ts`";
    DELETE "/v1/topics/{topic}/groups/{consumer_group}" => admin.delete_group(DeleteGroupRequest) -> DeleteGroupResponse,
        "AdminService.DeleteGroup", "Remove a group with its in-flight events and dead letters (no members subscribed)";
    GET "/v1/topics/{topic}/groups/{consumer_group}/dead-letters" => admin.list_dead_letters(ListDeadLettersRequest) -> ListDeadLettersResponse,
        "AdminService.ListDeadLetters", "A group's dead letters, oldest first";
    POST "/v1/topics/{topic}/groups/{consumer_group}/dead-letters/redrive" => admin.redrive_dead_letters(RedriveDeadLettersRequest) -> RedriveDeadLettersResponse,
        "AdminService.RedriveDeadLetters", "Deliver dead letters again (`message_ids`; none: all)";
}

fn route_of(method: &str, path: &str) -> &'static Route {
    ROUTES
        .iter()
        .find(|r| r.method == method && r.path == path)
        .expect("every handler is in the route table")
}

/// The API's routes, the OpenAPI document at `/v1/openapi.json`, and JSON
/// answers for unknown paths under `/v1`.
pub fn router(node: Arc<Node>) -> axum::Router {
    let api = Api {
        events: Events::new(node.clone()),
        admin: Admin::new(node.clone()),
        body_limit: node.message_limit(),
        gate: Gate::Edge(node),
    };
    let document = Arc::new(openapi::document());
    let router = axum::Router::new().route(
        "/v1/openapi.json",
        axum::routing::get(move || {
            let doc = document.clone();
            async move { json_response(StatusCode::OK, doc.as_ref()) }
        }),
    );
    api_routes(router)
        .route("/v1/{*rest}", axum::routing::any(no_route))
        .with_state(Arc::new(api))
}

async fn no_route(method: Method, uri: axum::http::Uri) -> Response {
    let path = uri.path();
    let known: Vec<&str> = ROUTES
        .iter()
        .filter(|r| input::matches(r.path, path))
        .map(|r| r.method)
        .collect();
    if known.is_empty() {
        error(&Status::not_found(format!(
            "no route {method} {path}; see /v1/openapi.json"
        )))
    } else {
        let mut r = error_with(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::Unimplemented,
            &format!("{path} takes {}, not {method}", known.join(", ")),
            None,
        );
        if let Ok(v) = known.join(", ").parse() {
            r.headers_mut().insert(axum::http::header::ALLOW, v);
        }
        r
    }
}

/// A server stream's messages.
type Messages<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl Api {
    /// `request` as it passes the gate (authenticated as over gRPC).
    fn admit<Req>(&self, request: tonic::Request<Req>) -> Result<tonic::Request<Req>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let mut gate = self.gate.clone();
        let admitted = gate.call(tonic::Request::from_parts(metadata, extensions, ()))?;
        let (metadata, extensions, ()) = admitted.into_parts();
        Ok(tonic::Request::from_parts(metadata, extensions, message))
    }

    /// Runs one gRPC method on `message` as the HTTP caller.
    async fn call<Req, Resp, F, Fut>(&self, request: tonic::Request<Req>, method: F) -> Response
    where
        Resp: Serialize,
        F: FnOnce(tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let request = match self.admit(request) {
            Ok(r) => r,
            Err(status) => return error(&status),
        };
        match method(request).await {
            Ok(reply) => json_response(StatusCode::OK, reply.get_ref()),
            Err(status) => error(&status),
        }
    }

    /// Runs one server-streaming gRPC method: its messages go out one JSON
    /// object per line as they come. An error before the first is an error
    /// answer; one after ends the stream with a line `{"error": {...}}`.
    /// The stream (and a member it joined) ends when the caller disconnects.
    async fn stream<Req, Item, F, Fut>(&self, request: tonic::Request<Req>, method: F) -> Response
    where
        Item: Serialize + Send + 'static,
        F: FnOnce(tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Messages<Item>>, Status>>,
    {
        let request = match self.admit(request) {
            Ok(r) => r,
            Err(status) => return error(&status),
        };
        let messages = match method(request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) => return error(&status),
        };
        let lines = messages
            .scan(false, |ended, item| {
                if *ended {
                    return std::future::ready(None);
                }
                let line = match item {
                    Ok(message) => serde_json::to_vec(&message)
                        .map_err(|e| Status::internal(format!("encoding the answer: {e}"))),
                    Err(status) => Err(status),
                };
                let line = line.unwrap_or_else(|status| {
                    *ended = true;
                    let body = ErrorBody::of(&status);
                    serde_json::to_vec(&serde_json::json!({ "error": body })).unwrap_or_default()
                });
                std::future::ready(Some(Ok::<_, std::convert::Infallible>(bytes::Bytes::from(
                    [line.as_slice(), b"\n"].concat(),
                ))))
            })
            .boxed();
        (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
            axum::body::Body::from_stream(lines),
        )
            .into_response()
    }
}

pub(crate) fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err(e) => error(&Status::internal(format!("encoding the answer: {e}"))),
    }
}

/// The JSON error body: the gRPC code's name and the same message.
pub(crate) fn error(status: &Status) -> Response {
    let field = chronos_api::status::field_of(status);
    error_with(
        http_status(status.code()),
        status.code(),
        status.message(),
        field,
    )
}

/// The JSON error body: the gRPC code's name, its message, and the request
/// field an INVALID_ARGUMENT is about.
#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl<'a> ErrorBody<'a> {
    fn of(status: &'a Status) -> Self {
        ErrorBody {
            code: code_name(status.code()),
            message: status.message(),
            field: chronos_api::status::field_of(status),
        }
    }
}

fn error_with(http: StatusCode, code: Code, message: &str, field: Option<&str>) -> Response {
    let mut r = json_response(
        http,
        &ErrorBody {
            code: code_name(code),
            message,
            field,
        },
    );
    *r.status_mut() = http;
    r
}

/// The usual mapping of gRPC codes to HTTP statuses (as gRPC gateways do).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The code's name as gRPC spells it (`INVALID_ARGUMENT`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
