//! `DescribeEvent` over a real server: an event's state (pending, fired,
//! cancelled) and, once fired, each consumer group's (waiting, in flight,
//! acked, dead, not for the group, and the redriven copy), over HTTP, gRPC
//! and the command line; unknown ids and bad names get errors naming the
//! field.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use chronos_proto::v1::{DeliveryStatus, DescribeEventRequest, EventStatus};
use common::json::{call, int, ok};
use common::{now_ms, subscribe_req, Member, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
/// `idle` (no member when they fired) and `late` (started after) stay so for
/// every event fired before `late` joined.
const IDLE_AND_LATE: [(&str, &str); 2] = [("idle", "WAITING"), ("late", "NOT_FOR_GROUP")];

fn with_workers(state: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut want = IDLE_AND_LATE.to_vec();
    want.push(("workers", state));
    want
}

fn describe(server: &Server, topic: &str, id: &str) -> Value {
    ok(
        server,
        "GET",
        &format!("/v1/topics/{topic}/events/{id}"),
        Value::Null,
    )
}

/// Each group's status (without the `DELIVERY_STATUS_` prefix), by name.
fn group_states(described: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = described["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let status = g["status"].as_str().unwrap();
            (
                g["group"].as_str().unwrap().to_string(),
                status.trim_start_matches("DELIVERY_STATUS_").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits until the event's groups are as `want` (applied state trails the
/// leader's by a moment).
fn wait_groups(server: &Server, topic: &str, id: &str, want: &[(&str, &str)]) -> Value {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(g, s)| (g.to_string(), s.to_string()))
        .collect();
    let until = Instant::now() + WAIT;
    loop {
        let described = describe(server, topic, id);
        if group_states(&described) == want {
            return described;
        }
        assert!(
            Instant::now() < until,
            "{id}: groups {:?}, want {want:?}: {described}",
            group_states(&described)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_described_as_it_stands_for_each_group() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("CHRONOS_DELIVERY__MAX_ATTEMPTS", "1")];
    let server = Server::start_with_env(&dir.path().join("data"), &[], &env);

    // `idle` exists but has no member when the events fire: they wait for it.
    drop(Member::join(&server, subscribe_req("idle", "jobs", 10)).await);
    let mut worker = Member::join(&server, subscribe_req("workers", "jobs", 10)).await;

    let later = now_ms() + 600_000;
    for id in ["p-1", "c-1"] {
        ok(
            &server,
            "POST",
            "/v1/events",
            json!({"topic": "jobs", "message_id": id, "schedule_ts": later, "payload_json": id}),
        );
    }
    ok(&server, "DELETE", "/v1/topics/jobs/events/c-1", Value::Null);
    let pending = describe(&server, "jobs", "p-1");
    assert_eq!(pending["status"], "EVENT_STATUS_PENDING", "{pending}");
    assert_eq!(pending["event"]["payload"], "InAtMSI=", "{pending}"); // "p-1" as JSON
    assert_eq!(pending["groups"], json!([]), "{pending}");
    assert!(pending["due_ts"].as_str().unwrap().parse::<i64>().unwrap() >= later);
    let cancelled = describe(&server, "jobs", "c-1");
    assert_eq!(cancelled["status"], "EVENT_STATUS_CANCELLED", "{cancelled}");
    assert!(cancelled["event"].is_null(), "{cancelled}");

    for id in ["acked", "dead", "held"] {
        ok(
            &server,
            "POST",
            "/v1/events",
            json!({"topic": "jobs", "message_id": id, "payload_json": id}),
        );
    }
    let mut held = None;
    for _ in 0..3 {
        let d = worker.next(WAIT).await;
        match d.event.as_ref().unwrap().message_id.as_str() {
            "acked" => {
                worker.ack(&[&d.delivery_id]).await;
            }
            "dead" => {
                worker.settle(&[&d.delivery_id], true, 0).await;
            }
            _ => held = Some(d),
        }
    }
    let held = held.expect("a delivery of `held`");
    // `late` starts after the three fired: they are not for it.
    let _late = Member::join(&server, subscribe_req("late", "jobs", 10)).await;

    let acked = wait_groups(&server, "jobs", "acked", &with_workers("ACKED"));
    assert_eq!(acked["status"], "EVENT_STATUS_FIRED", "{acked}");
    assert!(acked["fire_ts"].as_str().unwrap().parse::<i64>().unwrap() > 0);
    assert_eq!(acked["groups_unknown"], false);
    let dead = wait_groups(&server, "jobs", "dead", &with_workers("DEAD"));
    let workers = dead["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "workers")
        .unwrap();
    assert_eq!(workers["attempts"], 1, "{dead}");
    assert!(!workers["reason"].as_str().unwrap().is_empty(), "{dead}");
    let in_flight = wait_groups(&server, "jobs", "held", &with_workers("IN_FLIGHT"));
    let workers = &in_flight["groups"].as_array().unwrap()[2];
    assert_eq!(workers["attempts"], 1, "{in_flight}");
    assert!(
        int(&workers["at_ts"]) > now_ms(),
        "an ack deadline: {in_flight}"
    );

    // The copy redriven from the dead letters is the one the group works on.
    ok(
        &server,
        "POST",
        "/v1/topics/jobs/groups/workers/dead-letters/redrive",
        json!({"message_ids": ["dead"]}),
    );
    let again = worker.next(WAIT).await;
    assert_eq!(again.event.as_ref().unwrap().message_id, "dead");
    wait_groups(&server, "jobs", "dead", &with_workers("IN_FLIGHT"));
    worker.ack(&[&again.delivery_id, &held.delivery_id]).await;
    wait_groups(&server, "jobs", "dead", &with_workers("ACKED"));

    // The same over gRPC, and on the command line.
    let mut client = server.events().await;
    let r = client
        .describe_event(DescribeEventRequest {
            topic: "jobs".into(),
            message_id: "held".into(),
            key: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), EventStatus::Fired);
    let workers = r.groups.iter().find(|g| g.group == "workers").unwrap();
    assert_eq!(workers.status(), DeliveryStatus::Acked, "{r:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_chronos"))
        .args(["describe", "jobs", "held"])
        .env("CHRONOS_ADDR", server.endpoint())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {:?}", out.stderr);
    assert!(text.contains("jobs/held: fired"), "{text}");
    assert!(text.contains("group workers: acked"), "{text}");
    assert!(text.contains("group late: not_for_group"), "{text}");

    // Unknown ids and bad names.
    let (code, err) = call(&server, "GET", "/v1/topics/jobs/events/nope", &Value::Null);
    assert_eq!(code, 404, "{err}");
    assert_eq!(err["code"], "NOT_FOUND");
    assert!(
        err["message"].as_str().unwrap().contains("message_id"),
        "{err}"
    );
    let (code, err) = call(
        &server,
        "GET",
        "/v1/topics/no%20spaces/events/x",
        &Value::Null,
    );
    assert_eq!(code, 400, "{err}");
    assert!(
        err["message"].as_str().unwrap().starts_with("topic"),
        "{err}"
    );
}
