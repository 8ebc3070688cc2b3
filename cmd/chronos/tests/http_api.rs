//! The HTTP/JSON API over a real server process on loopback: every route,
//! the OpenAPI document against the route table, bad input naming the field,
//! paging to the end, pending inspection exact against what was published
//! (with cancels and reschedules), and a redrive that delivers again.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::json::{call, int, ok};
use common::{now_ms, subscribe_req, Member, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn the_openapi_document_lists_exactly_the_routes_and_each_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let doc = ok(&server, "GET", "/v1/openapi.json", Value::Null);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = BTreeSet::new();
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            documented.insert((method.to_uppercase(), path.clone()));
            // Every answer's schema is in the document (a stream's per line).
            let content = &op["responses"]["200"]["content"];
            let answer = match content.get("application/x-ndjson") {
                Some(lines) => lines,
                None => &content["application/json"],
            };
            let schema = answer["schema"]["$ref"].as_str().unwrap();
            let name = schema.rsplit('/').next().unwrap();
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{name} missing"
            );
        }
    }
    let routed: BTreeSet<(String, String)> = chronos_http::ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(documented, routed);
    // Each documented route reaches its method: the answer is the method's
    // (200 or its own error), never the router's "no route" or 405.
    for (method, path) in &documented {
        let concrete = path
            .replace("{topic}", "t")
            .replace("{consumer_group}", "g")
            .replace("{schedule_id}", "s")
            .replace("{message_id}", "m")
            .replace("{node_id}", "9");
        // A stream that would stay open is asked for too much instead.
        let concrete = match concrete.ends_with("/subscribe") {
            true => format!("{concrete}?max_inflight=4000000000"),
            false => concrete,
        };
        let (code, body) = call(&server, method, &concrete, &json!({}));
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            code != 405 && !message.starts_with("no route"),
            "{method} {concrete}: {code} {body}"
        );
        assert!(
            code == 200 || body["code"].is_string(),
            "{method} {concrete}: {body}"
        );
    }
    let (code, body) = call(&server, "GET", "/v1/no/such/route", &Value::Null);
    assert_eq!((code, body["code"].as_str()), (404, Some("NOT_FOUND")));
    let (code, body) = call(&server, "GET", "/v1/events", &Value::Null);
    assert_eq!(
        (code, body["code"].as_str()),
        (405, Some("UNIMPLEMENTED")),
        "{body}"
    );
    // Field documentation comes from the .proto comments.
    let due = &doc["components"]["schemas"]["Event"]["properties"]["schedule_ts"]["description"];
    assert!(due.as_str().unwrap().contains("When to deliver"), "{due}");
}

#[test]
fn bad_input_gets_a_json_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let big = "A".repeat(1_500_000);
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        ("POST", "/v1/events", json!({"topic": "bad topic!", "message_id": "x"}), 400, "event.topic:"),
        ("POST", "/v1/events", json!({"topic": "t"}), 400, "event.message_id:"),
        ("POST", "/v1/events", json!({"topic": "t", "message_id": "x", "schedule_ts": "soon"}), 400, "event.schedule_ts:"),
        ("POST", "/v1/events/batch", json!({"events": [{"topic": "t", "message_id": "a", "schedule_ts": 1e20}]}), 400, "events[0].schedule_ts:"),
        ("POST", "/v1/events", json!({"topic": "t", "message_id": "x", "colour": 1}), 400, "event.colour:"),
        ("POST", "/v1/events", json!({"topic": "t", "message_id": "x", "payload": big}), 400, "event.payload:"),
        ("POST", "/v1/events", json!({"topic": "t", "message_id": "x", "payload": "aGk=", "payload_json": {}}), 400, "event.payload_json:"),
        ("POST", "/v1/events/batch", json!({"events": [{"topic": "t", "message_id": "a"}, {"topic": "t", "message_id": ""}]}), 400, "events[1].message_id:"),
        ("POST", "/v1/events/cancel", json!({"topic": "t", "message_id": "never"}), 404, ""),
        ("POST", "/v1/events/cancel-batch", json!({"cancels": []}), 400, "cancels:"),
        ("POST", "/v1/events/cancel-batch", json!({"cancels": [{"topic": "t", "message_id": "a"}, {"topic": "t"}]}), 400, "cancels[1].message_id:"),
        ("GET", "/v1/topics/t/pending?page_size=5000", Value::Null, 400, "page_size:"),
        ("GET", "/v1/topics/t/pending?page_token=zzz", Value::Null, 400, "page_token:"),
        ("GET", "/v1/topics/t/pending?due_time.from_ts=-5", Value::Null, 400, "due_time.from_ts:"),
        ("GET", "/v1/topics/t/pending/histogram?bucket_ms=1500", Value::Null, 400, "bucket_ms:"),
        ("GET", "/v1/topics/t/pending/histogram?bucket_ms=1000&due_time[from_ts]=0&due_time[to_ts]=86400000", Value::Null, 400, "bucket_ms:"),
        ("GET", "/v1/topics/t/events?due_time.from_ts=10&due_time.to_ts=5", Value::Null, 400, "due_time.to_ts:"),
        ("GET", "/v1/topics/t/pending/histogram?due_time.from_ts=0&due_time.to_ts=9223372036854775807&bucket_ms=9223372036854775000", Value::Null, 400, "due_time.to_ts:"),
        ("GET", "/v1/topics/t/pending/histogram?due_time.from_ts=0&due_time.to_ts=9223372036854775000&bucket_ms=1000000000000000000", Value::Null, 200, ""),
        ("GET", "/v1/topics/t/events?partition_id=99", Value::Null, 400, "partition_id:"),
        ("GET", "/v1/topics/t/events?page_size=nine", Value::Null, 400, "page_size:"),
        ("POST", "/v1/schedules", json!({"schedule_id": "s", "topic": "t", "cron": "not a cron"}), 400, "schedule.cron:"),
        ("PUT", "/v1/schedules/s", json!({"schedule_id": "other", "topic": "t", "every_ms": 1000}), 400, "schedule.schedule_id:"),
        ("GET", "/v1/schedules/nope", Value::Null, 404, ""),
        ("POST", "/v1/topics/t/groups/g/seek", json!({"ts": "x"}), 400, "ts:"),
    ];
    for (method, path, body, want_code, field) in cases {
        let (code, answer) = call(&server, method, path, &body);
        assert_eq!(code, want_code, "{method} {path}: {answer}");
        if want_code == 200 {
            continue;
        }
        let message = answer["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{method} {path}: {message}");
        assert!(answer["code"].is_string(), "{answer}");
        // The field on its own, for a program to read.
        if want_code == 400 {
            let named = answer["field"].as_str();
            assert_eq!(named, field.strip_suffix(':'), "{method} {path}: {answer}");
        }
    }
    // A number beyond 64 bits is named as such, not by the parser's words.
    let body = json!({"topic": "t", "message_id": "x", "schedule_ts": 1e20});
    let (code, answer) = call(&server, "POST", "/v1/events", &body);
    assert_eq!(code, 400, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.starts_with("event.schedule_ts: ")
            && message.ends_with("is outside the range of a 64-bit integer"),
        "{message}"
    );
    // Not JSON at all.
    let (code, text) = server
        .http_call("POST", "/v1/events", "{nope", &[])
        .unwrap();
    assert_eq!(code, 400);
    assert!(text.contains("\"message\":\"body:"), "{text}");
    // Nothing was stored by any of it.
    let topics = ok(&server, "GET", "/v1/topics", Value::Null);
    assert_eq!(topics["topics"], json!([]), "{topics}");
}

/// Everything pending of `topic`, page by page (`page_size` each).
fn all_pending(server: &Server, topic: &str, query: &str, page_size: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let path =
            format!("/v1/topics/{topic}/pending?page_size={page_size}&page_token={token}{query}");
        let page = ok(server, "GET", &path, Value::Null);
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= page_size as usize);
        out.extend(events.iter().cloned());
        token = page["next_page_token"].as_str().unwrap().to_string();
        if token.is_empty() {
            return out;
        }
    }
}

#[test]
fn pending_inspection_is_exact_after_cancels_and_reschedules() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let base = (now_ms() / 60_000 + 5) * 60_000; // a whole minute, 4-5 min ahead
                                                 // id → due; 400 events over 40 minutes, and another topic in between.
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for chunk in 0..4 {
        let events: Vec<Value> = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                let due = base + (n as i64 * 6_007) % 2_400_000;
                expected.insert(format!("e{n}"), due);
                json!({"topic": "orders", "message_id": format!("e{n}"), "schedule_ts": due,
                       "key": format!("k{}", n % 7), "payload_json": {"n": n}})
            })
            .chain((0..50).map(|i| json!({"topic": "other", "message_id": format!("o{chunk}-{i}"), "schedule_ts": base + i * 1000})))
            .collect();
        let answer = publish_batch(&server, events);
        assert_eq!(answer["results"].as_array().unwrap().len(), 150);
    }
    // Cancel 30 (by both routes), reschedule 20.
    for n in 0..30 {
        let id = format!("e{}", n * 11);
        let key = format!("k{}", (n * 11) % 7);
        if n % 2 == 0 {
            ok(
                &server,
                "DELETE",
                &format!("/v1/topics/orders/events/{id}?key={key}"),
                Value::Null,
            );
        } else {
            ok(
                &server,
                "POST",
                "/v1/events/cancel",
                json!({"topic": "orders", "message_id": id, "key": key}),
            );
        }
        expected.remove(&id);
    }
    // And 20 more in one `CancelBatch`, with one repeated and one unknown.
    let ids: Vec<String> = (0..20).map(|n| format!("e{}", n * 17 + 3)).collect();
    let cancels: Vec<Value> = (ids.iter().chain([&ids[0], &"nope".to_string()]))
        .map(|id| {
            let n: usize = id[1..].parse().unwrap_or(0);
            json!({"topic": "orders", "message_id": id, "key": format!("k{}", n % 7)})
        })
        .collect();
    let answer = ok(
        &server,
        "POST",
        "/v1/events/cancel-batch",
        json!({ "cancels": cancels }),
    );
    let statuses: Vec<&str> = (answer["results"].as_array().unwrap().iter())
        .map(|r| r["status"].as_str().unwrap_or("CANCEL_STATUS_CANCELLED"))
        .collect();
    for (id, status) in ids.iter().zip(&statuses) {
        let want = match expected.remove(id) {
            Some(_) => "CANCEL_STATUS_CANCELLED",
            None => "CANCEL_STATUS_ALREADY_CANCELLED",
        };
        assert_eq!(*status, want, "{id}: {answer}");
    }
    assert_eq!(
        statuses[20..],
        ["CANCEL_STATUS_ALREADY_CANCELLED", "CANCEL_STATUS_NOT_FOUND"]
    );
    for n in 0..20 {
        let id = format!("e{}", n * 13 + 1);
        if !expected.contains_key(&id) {
            continue;
        }
        let due = base + 3_000_000 + n * 500;
        let body = json!({"topic": "orders", "message_id": id, "schedule_ts": due, "key": format!("k{}", (n * 13 + 1) % 7)});
        let answer = ok(&server, "POST", "/v1/events?reschedule=true", body);
        assert_eq!(int(&answer["due_ts"]), due, "{answer}");
        expected.insert(id, due);
    }

    // Listing page by page: exactly the pending ones, in due order.
    let listed = all_pending(&server, "orders", "", 37);
    let got: BTreeMap<String, i64> = listed
        .iter()
        .map(|e| {
            (
                e["event"]["message_id"].as_str().unwrap().to_string(),
                int(&e["due_ts"]),
            )
        })
        .collect();
    assert_eq!(got.len(), listed.len(), "an event listed twice");
    assert_eq!(got, expected);
    let order: Vec<(i64, i64, i64)> = listed
        .iter()
        .map(|e| (int(&e["due_ts"]), int(&e["partition"]), int(&e["offset"])))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "not in due order");
    assert_eq!(listed[0]["event"]["topic"], "orders");
    // A due-time window lists exactly the events inside it.
    let (from, to) = (base + 600_000, base + 1_200_000);
    let window = all_pending(
        &server,
        "orders",
        &format!("&due_time.from_ts={from}&due_time.to_ts={to}"),
        1000,
    );
    let inside = expected.values().filter(|&&d| d >= from && d < to).count();
    assert_eq!(window.len(), inside);

    // The histogram agrees, bucket by bucket.
    let hist = ok(
        &server,
        "GET",
        &format!("/v1/topics/orders/pending/histogram?bucket_ms=60000&due_time.from_ts={base}&due_time.to_ts={}", base + 3_600_000),
        Value::Null,
    );
    let buckets = hist["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 60);
    for (i, b) in buckets.iter().enumerate() {
        let start = base + i as i64 * 60_000;
        assert_eq!(int(&b["from_ts"]), start);
        let want = expected
            .values()
            .filter(|&&d| d >= start && d < start + 60_000)
            .count();
        assert_eq!(int(&b["count"]), want as i64, "bucket {i}");
    }
    assert_eq!(int(&hist["total"]), expected.len() as i64);
    assert_eq!(int(&hist["before"]), 0);
    // The topic list agrees too.
    let topics = ok(&server, "GET", "/v1/topics", Value::Null);
    let orders = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap();
    assert_eq!(int(&orders["pending"]), expected.len() as i64);
}

#[test]
fn searching_pages_to_the_end_of_a_topic_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let total = 3000;
    for chunk in 0..(total / 500) {
        let events: Vec<Value> = (0..500)
            .map(|i| {
                let n = chunk * 500 + i;
                let kind = if n % 10 == 0 { "audit" } else { "plain" };
                json!({"topic": "log", "message_id": format!("m{n:05}"), "headers": {"kind": kind},
                       "key": if n % 3 == 0 { "three" } else { "" }})
            })
            .collect();
        publish_batch(&server, events);
    }
    let search = |query: &str, page_size: u32| -> Vec<String> {
        let mut ids = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let path =
                format!("/v1/topics/log/events?page_size={page_size}&page_token={token}{query}");
            let page = ok(&server, "GET", &path, Value::Null);
            ids.extend(
                page["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["event"]["message_id"].as_str().unwrap().to_string()),
            );
            pages += 1;
            assert!(pages <= total, "paging does not end");
            token = page["next_page_token"].as_str().unwrap().to_string();
            if token.is_empty() {
                return ids;
            }
        }
    };
    let all = search("", 1000);
    assert_eq!(all.len(), total);
    assert_eq!(
        all.iter().collect::<BTreeSet<_>>().len(),
        total,
        "an event twice"
    );
    let audit = search("&headers.kind=audit", 70);
    assert_eq!(audit.len(), total / 10);
    let audit_deep = search("&headers[kind]=audit", 1000);
    assert_eq!(audit, audit_deep);
    let prefixed = search("&message_id_prefix=m001", 1000);
    assert_eq!(prefixed.len(), 100);
    assert!(prefixed.iter().all(|id| id.starts_with("m001")));
    let keyed = search("&key=three&headers.kind=audit", 1000);
    assert_eq!(keyed.len(), (0..total).filter(|n| n % 30 == 0).count());
    // The gRPC stream's filters are the same ones.
    let one_partition = search("&partition_id=3", 1000);
    assert!(!one_partition.is_empty() && one_partition.len() < total);
}

#[tokio::test]
async fn a_dead_letter_redriven_over_http_is_delivered_again() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("CHRONOS_DELIVERY__MAX_ATTEMPTS", "1")];
    let server = Server::start_with_env(&dir.path().join("data"), &[], &env);
    let mut m = Member::join(&server, subscribe_req("g", "jobs", 10)).await;
    ok(
        &server,
        "POST",
        "/v1/events",
        json!({"topic": "jobs", "message_id": "j1", "payload_json": "work"}),
    );
    let first = m.next(WAIT).await;
    assert_eq!(first.event.as_ref().unwrap().payload.as_ref(), b"\"work\"");
    m.settle(&[&first.delivery_id], true, 0).await;
    let until = Instant::now() + WAIT;
    let dead = loop {
        let dead = ok(
            &server,
            "GET",
            "/v1/topics/jobs/groups/g/dead-letters",
            Value::Null,
        );
        if !dead["dead_letters"].as_array().unwrap().is_empty() {
            break dead;
        }
        assert!(Instant::now() < until, "no dead letter: {dead}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead["dead_letters"][0]["event"]["message_id"], "j1");
    let group = ok(&server, "GET", "/v1/topics/jobs/groups/g", Value::Null);
    assert_eq!(int(&group["group"]["dead_letters"]), 1, "{group}");
    let redriven = ok(
        &server,
        "POST",
        "/v1/topics/jobs/groups/g/dead-letters/redrive",
        json!({"message_ids": ["j1"]}),
    );
    assert_eq!(int(&redriven["redriven"]), 1);
    let again = m.next(WAIT).await;
    assert_eq!(again.event.unwrap().message_id, "j1");
    m.ack(&[&again.delivery_id]).await;
    let groups = ok(&server, "GET", "/v1/groups?topic=jobs", Value::Null);
    assert_eq!(groups["groups"][0]["name"], "g", "{groups}");
}

#[test]
fn http_callers_are_authenticated_and_authorized_as_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, viewer) = ("chr_test_http_admin_0123", "chr_test_http_viewer_0123");
    let config = format!(
        "[auth]\nenabled = true\n\
         [[auth.principals]]\nname = \"root\"\ntokens = [\"{}\"]\n\
         [[auth.principals.grants]]\nrole = \"admin\"\n\
         [[auth.principals]]\nname = \"watcher\"\ntokens = [\"{}\"]\n\
         [[auth.principals.grants]]\nrole = \"viewer\"\n",
        chronos_access::hash_token(admin),
        chronos_access::hash_token(viewer),
    );
    let path = dir.path().join("chronos.toml");
    std::fs::write(&path, config).unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", path.to_str().unwrap()],
    );
    let publish = json!({"topic": "t", "message_id": "a"}).to_string();
    let as_ = |token: &str, method: &str, path: &str, body: &str| -> (u16, Value) {
        let bearer = format!("Bearer {token}");
        let headers: Vec<(&str, &str)> = if token.is_empty() {
            vec![]
        } else {
            vec![("Authorization", bearer.as_str())]
        };
        let (code, text) = server.http_call(method, path, body, &headers).unwrap();
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    let (code, body) = as_("", "GET", "/v1/topics", "");
    assert_eq!(
        (code, body["code"].as_str()),
        (401, Some("UNAUTHENTICATED")),
        "{body}"
    );
    let (code, body) = as_("chr_wrong", "GET", "/v1/topics", "");
    assert_eq!(code, 401, "{body}");
    let (code, body) = as_(viewer, "POST", "/v1/events", &publish);
    assert_eq!(
        (code, body["code"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{body}"
    );
    let (code, body) = as_(admin, "POST", "/v1/events", &publish);
    assert_eq!(code, 200, "{body}");
    let (code, body) = as_(viewer, "GET", "/v1/topics", "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["topics"][0]["name"], "t");
}

/// Publishes `events` in one `POST /v1/events/batch`; its answer.
fn publish_batch(server: &Server, events: Vec<Value>) -> Value {
    ok(
        server,
        "POST",
        "/v1/events/batch",
        json!({ "events": events }),
    )
}

/// A `subscribe` route's answer read as it comes: HTTP/1.1, chunked, one
/// JSON object per line. Dropping it closes the connection.
struct Lines {
    reader: BufReader<TcpStream>,
    pending: Vec<u8>,
}

impl Lines {
    /// Opens `path`; the status and the content type must say a stream.
    fn open(server: &Server, path: &str) -> Lines {
        let mut s = TcpStream::connect(&server.http).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let head = head.to_lowercase();
        assert!(
            head.contains("content-type: application/x-ndjson"),
            "{head}"
        );
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        Lines {
            reader,
            pending: Vec::new(),
        }
    }

    /// The next line's object; panics if none comes within `WAIT`.
    #[track_caller]
    fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return serde_json::from_slice(&line).unwrap();
            }
            let mut size = String::new();
            self.reader
                .read_line(&mut size)
                .expect("a chunk within WAIT");
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            assert!(size > 0, "the stream ended");
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).unwrap();
            self.pending.extend_from_slice(&chunk[..size]);
        }
    }

    /// Every line until the answer ends (its last chunk), within `WAIT`.
    fn rest(mut self) -> Vec<Value> {
        let mut lines = Vec::new();
        loop {
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                lines.push(serde_json::from_slice(&line).unwrap());
            }
            let mut size = String::new();
            self.reader
                .read_line(&mut size)
                .expect("the end within WAIT");
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                assert!(self.pending.is_empty(), "a partial line at the end");
                return lines;
            }
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).unwrap();
            self.pending.extend_from_slice(&chunk[..size]);
        }
    }
}

/// Consuming with nothing but HTTP: a member streams deliveries as JSON lines
/// within its window, acks and nacks go to the ack route, and a member that
/// disconnects gives back what it held.
#[test]
fn a_group_is_consumed_over_http_as_a_stream_of_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let events: Vec<Value> = (0..3)
        .map(|i| json!({"topic": "jobs", "message_id": format!("j{i}"), "payload_json": {"n": i}}))
        .collect();
    publish_batch(&server, events);
    let path =
        "/v1/topics/jobs/groups/workers/subscribe?max_inflight=2&start=START_POSITION_EARLIEST";
    let mut member = Lines::open(&server, path);
    let (a, b) = (member.next(), member.next());
    assert_eq!(a["event"]["topic"], "jobs", "{a}");
    assert_eq!(int(&a["attempt"]), 1, "{a}");
    let group = "/v1/topics/jobs/groups/workers";
    let inflight =
        |server: &Server| int(&ok(server, "GET", group, Value::Null)["group"]["inflight"]);
    assert_eq!(inflight(&server), 2, "the window is two");
    // An ack frees the window: the third comes. A nack sends one back.
    let acked = ok(
        &server,
        "POST",
        "/v1/groups/workers/ack",
        json!({"items": [{"delivery_id": a["delivery_id"]}, {"delivery_id": b["delivery_id"], "nack": true, "nack_delay_ms": 100}]}),
    );
    assert_eq!(
        (int(&acked["acked"]), int(&acked["nacked"])),
        (1, 1),
        "{acked}"
    );
    let mut seen = vec![
        a["event"]["message_id"].clone(),
        b["event"]["message_id"].clone(),
    ];
    let mut again = None;
    while seen.len() < 3 || again.is_none() {
        let d = member.next();
        if d["event"]["message_id"] == b["event"]["message_id"] {
            assert_eq!(int(&d["attempt"]), 2, "{d}");
            again = Some(d.clone());
        } else {
            seen.push(d["event"]["message_id"].clone());
        }
        ok(
            &server,
            "POST",
            "/v1/groups/workers/ack",
            json!({"items": [{"delivery_id": d["delivery_id"]}]}),
        );
    }
    seen.sort_by_key(|v| v.to_string());
    seen.dedup();
    assert_eq!(seen.len(), 3, "{seen:?}");
    // A member that goes away holding a delivery gives it back.
    ok(
        &server,
        "POST",
        "/v1/events",
        json!({"topic": "jobs", "message_id": "j3"}),
    );
    let held = member.next();
    assert_eq!(held["event"]["message_id"], "j3");
    drop(member);
    let mut next = Lines::open(&server, path);
    let back = next.next();
    assert_eq!(
        (back["event"]["message_id"].clone(), int(&back["attempt"])),
        (json!("j3"), 2),
        "{back}"
    );
    // An ack of an earlier attempt's id counts (the event is done); once
    // done, its ids are reported as not in flight, not as an error.
    let ack_held = json!({"items": [{"delivery_id": held["delivery_id"]}]});
    let first = ok(&server, "POST", "/v1/groups/workers/ack", ack_held.clone());
    assert_eq!(int(&first["acked"]), 1, "{first}");
    let stale = ok(&server, "POST", "/v1/groups/workers/ack", ack_held);
    assert_eq!(stale["unknown"][0], held["delivery_id"], "{stale}");
    assert_eq!(inflight(&server), 0);
    // Bad input is an error answer naming the field, not a stream.
    let (code, body) = call(
        &server,
        "GET",
        "/v1/topics/__jobs/groups/w/subscribe",
        &Value::Null,
    );
    assert_eq!(
        (code, body["field"].as_str()),
        (400, Some("topic")),
        "{body}"
    );
    let (code, body) = call(
        &server,
        "POST",
        "/v1/groups/workers/ack",
        &json!({"items": [{"delivery_id": ""}]}),
    );
    assert_eq!(code, 400, "{body}");
}

/// Fetch, hang up, ack later: a member that keeps what it holds leaves its
/// deliveries in flight until their ack timeout, so an HTTP client can read a
/// few lines, close, and ack by id afterwards; what it never acks comes back
/// at the timeout, to the next member.
#[test]
fn a_member_that_keeps_unacked_can_fetch_and_ack_after_it_left() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("CHRONOS_DELIVERY__ACK_TIMEOUT", "2s")];
    let server = Server::start_with_env(&dir.path().join("data"), &[], &env);
    let events: Vec<Value> = (0..2)
        .map(|i| json!({"topic": "mail", "message_id": format!("m{i}")}))
        .collect();
    publish_batch(&server, events);
    let fetch = "/v1/topics/mail/groups/senders/subscribe?max_inflight=2&keep_unacked=true&start=START_POSITION_EARLIEST";
    let mut first = Lines::open(&server, fetch);
    let (a, b) = (first.next(), first.next());
    drop(first);
    let group = "/v1/topics/mail/groups/senders";
    let until = Instant::now() + WAIT;
    loop {
        let g = ok(&server, "GET", group, Value::Null);
        if int(&g["group"]["members"]) == 0 {
            assert_eq!(int(&g["group"]["inflight"]), 2, "kept in flight: {g}");
            break;
        }
        assert!(Instant::now() < until, "the member never left: {g}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let acked = ok(
        &server,
        "POST",
        "/v1/groups/senders/ack",
        json!({"items": [{"delivery_id": a["delivery_id"]}]}),
    );
    assert_eq!(int(&acked["acked"]), 1, "acked after leaving: {acked}");
    // The one never acked goes to the next member at its ack timeout, not before.
    let left_at = Instant::now();
    let mut second = Lines::open(&server, fetch);
    let again = second.next();
    assert_eq!(
        again["event"]["message_id"], b["event"]["message_id"],
        "{again}"
    );
    assert_eq!(int(&again["attempt"]), 2, "{again}");
    assert!(
        left_at.elapsed() >= Duration::from_millis(1000),
        "came back before its timeout"
    );
}

/// Fetching as a loop of requests: each answer ends by itself after
/// `max_deliveries` (or at `max_wait_ms` with what came), the member with
/// it, so acks sent right after cannot hand it more: every event once, at
/// its first attempt, none left waiting for a timeout.
#[test]
fn fetches_end_after_max_deliveries_or_the_wait_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let events: Vec<Value> = (0..5)
        .map(|i| json!({"topic": "inbox", "message_id": format!("i{i}")}))
        .collect();
    publish_batch(&server, events);
    let fetch = "/v1/topics/inbox/groups/pollers/subscribe?max_inflight=100&max_deliveries=2&max_wait_ms=1500&keep_unacked=true&start=START_POSITION_EARLIEST";
    let mut seen = BTreeSet::new();
    let mut sizes = Vec::new();
    while seen.len() < 5 {
        assert!(sizes.len() < 5, "fetched {sizes:?}, seen {seen:?}");
        let got = Lines::open(&server, fetch).rest();
        sizes.push(got.len());
        let items: Vec<Value> = got
            .iter()
            .map(|d| json!({"delivery_id": d["delivery_id"]}))
            .collect();
        for d in &got {
            assert_eq!(int(&d["attempt"]), 1, "handed out twice: {d}");
            assert!(seen.insert(d["event"]["message_id"].to_string()), "{d}");
        }
        let acked = ok(
            &server,
            "POST",
            "/v1/groups/pollers/ack",
            json!({ "items": items }),
        );
        assert_eq!(int(&acked["acked"]), got.len() as i64, "{acked}");
    }
    assert_eq!(sizes, vec![2, 2, 1], "two, two, then one at the wait");
    // Nothing left: the answer ends at the wait, empty, and nothing is in flight.
    let started = Instant::now();
    assert!(Lines::open(&server, fetch).rest().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(1400));
    let g = ok(
        &server,
        "GET",
        "/v1/topics/inbox/groups/pollers",
        Value::Null,
    );
    assert_eq!(int(&g["group"]["inflight"]), 0, "{g}");
}
