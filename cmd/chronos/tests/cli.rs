//! The `chronos` command line against a real server: each subcommand's happy
//! path, and the exit codes of bad input (1) and server errors (2).

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Server;

fn chronos(server_addr: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chronos"))
        .args(args)
        .env("CHRONOS_ADDR", server_addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chronos");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(server: &Server, args: &[&str]) -> String {
    let out = chronos(&server.endpoint(), args, None);
    assert!(
        out.status.success(),
        "chronos {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn publish_subscribe_replay_cancel_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    server.wait_ready(common::START_DEADLINE);
    let out = ok(
        &server,
        &[
            "publish", "orders", "hello", "--id", "o1", "--header", "src=cli",
        ],
    );
    assert!(out.starts_with("published orders/o1: partition "), "{out}");
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, b"from a file").unwrap();
    let out = ok(
        &server,
        &[
            "--json",
            "publish",
            "orders",
            "--id",
            "o2",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(json_lines(&out)[0]["message_id"], "o2");
    let piped = chronos(
        &server.endpoint(),
        &["publish", "orders", "--id", "o3", "--in", "1s"],
        Some(b"piped"),
    );
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    let again = ok(&server, &["publish", "orders", "hello", "--id", "o1"]);
    assert!(again.contains("duplicate"), "{again}");

    let started = Instant::now();
    let out = ok(
        &server,
        &[
            "--json",
            "subscribe",
            "orders",
            "-g",
            "billing",
            "--start",
            "earliest",
            "--count",
            "3",
            "--timeout",
            "20s",
        ],
    );
    let got = json_lines(&out);
    let ids: Vec<_> = got
        .iter()
        .map(|d| d["event"]["message_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "{out}");
    for id in ["o1", "o2", "o3"] {
        assert!(ids.iter().any(|i| i == id), "{id} missing: {ids:?}");
    }
    let o2 = got
        .iter()
        .find(|d| d["event"]["message_id"] == "o2")
        .unwrap();
    assert_eq!(o2["event"]["payload"], "from a file");
    assert!(started.elapsed() < Duration::from_secs(20));
    // Everything was acked before the command exited.
    let desc = json_lines(&ok(
        &server,
        &["--json", "groups", "describe", "orders", "billing"],
    ));
    assert_eq!(
        (desc[0]["inflight"].as_u64(), desc[0]["lag"].as_u64()),
        (Some(0), Some(0))
    );
    let list = ok(&server, &["groups", "list", "--topic", "orders"]);
    assert!(list.contains("orders/billing"), "{list}");

    let replay = ok(&server, &["replay", "orders"]);
    assert_eq!(replay.lines().count(), 3, "{replay}");
    assert!(
        replay.contains("orders/o3") && replay.contains("piped"),
        "{replay}"
    );
    let by_time = json_lines(&ok(
        &server,
        &["--json", "replay", "orders", "--since", "0"],
    ));
    assert_eq!(by_time.len(), 3);

    ok(
        &server,
        &["publish", "orders", "later", "--id", "o4", "--in", "1h"],
    );
    let cancel = ok(&server, &["cancel", "orders", "o4"]);
    assert!(cancel.starts_with("cancelled orders/o4"), "{cancel}");
    let twice = chronos(&server.endpoint(), &["cancel", "orders", "nope"], None);
    assert_eq!(twice.status.code(), Some(2));
    assert!(
        text(&twice.stderr).contains("NotFound"),
        "{}",
        text(&twice.stderr)
    );
    // Many ids: one `CancelBatch`, a line each; one not cancelled fails the run.
    for id in ["o5", "o6"] {
        ok(
            &server,
            &["publish", "orders", "later", "--id", id, "--in", "1h"],
        );
    }
    let many = ok(&server, &["cancel", "orders", "o5", "o6", "o4"]);
    let lines: Vec<&str> = many.lines().collect();
    assert_eq!(lines.len(), 3, "{many}");
    assert!(lines[0].starts_with("cancelled orders/o5"), "{many}");
    assert!(lines[1].starts_with("cancelled orders/o6"), "{many}");
    assert!(
        lines[2].starts_with("already-cancelled orders/o4"),
        "{many}"
    );
    let some = chronos(&server.endpoint(), &["cancel", "orders", "o5", "o3"], None);
    assert_eq!(some.status.code(), Some(2), "{}", text(&some.stderr));
    assert!(
        text(&some.stdout).contains("already-fired orders/o3"),
        "{}",
        text(&some.stdout)
    );
    assert!(
        text(&some.stderr).contains("1 of 2"),
        "{}",
        text(&some.stderr)
    );

    let status = ok(&server, &["status"]);
    assert!(
        status.contains("partition") && status.contains("node 1"),
        "{status}"
    );
    let status = json_lines(&ok(&server, &["--json", "status"]));
    assert_eq!(status[0]["partitions"].as_array().unwrap().len(), 8);

    let seek = ok(
        &server,
        &[
            "groups",
            "seek",
            "orders",
            "billing",
            "--to",
            "1970-01-01T00:00:00Z",
        ],
    );
    assert!(seek.contains("orders/billing"), "{seek}");
    let replayed = ok(
        &server,
        &[
            "subscribe",
            "orders",
            "-g",
            "billing",
            "--count",
            "3",
            "--timeout",
            "20s",
        ],
    );
    assert_eq!(replayed.lines().count(), 3, "after the seek: {replayed}");

    // The subscriber's leave reaches the partitions a moment after it exits.
    let until = Instant::now() + Duration::from_secs(10);
    let deleted = loop {
        let args = ["--json", "groups", "delete", "orders", "billing"];
        let out = chronos(&server.endpoint(), &args, None);
        if out.status.success() {
            break json_lines(&text(&out.stdout));
        }
        let err = text(&out.stderr);
        assert!(
            err.contains("FailedPrecondition") && Instant::now() < until,
            "{err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (
            deleted[0]["in_flight"].as_u64(),
            deleted[0]["dead_letters"].as_u64()
        ),
        (Some(0), Some(0)),
        "{deleted:?}"
    );
    let gone = chronos(
        &server.endpoint(),
        &["groups", "describe", "orders", "billing"],
        None,
    );
    assert_eq!(gone.status.code(), Some(2));
    assert!(
        text(&gone.stderr).contains("NotFound"),
        "{}",
        text(&gone.stderr)
    );
}

#[test]
fn dead_letters_are_listed_and_redriven() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("CHRONOS_DELIVERY__ACK_TIMEOUT", "200ms"),
        ("CHRONOS_DELIVERY__MAX_ATTEMPTS", "1"),
    ];
    let server = Server::start_with_env(&dir.path().join("data"), &[], &env);
    server.wait_ready(common::START_DEADLINE);
    // Create the group, then publish, then receive without acking.
    ok(
        &server,
        &["subscribe", "jobs", "-g", "w", "--timeout", "100ms"],
    );
    ok(&server, &["publish", "jobs", "work", "--id", "j1"]);
    // Connected but not acking past the ack timeout: the one attempt fails.
    let held = ok(
        &server,
        &[
            "subscribe",
            "jobs",
            "-g",
            "w",
            "--no-ack",
            "--timeout",
            "1s",
        ],
    );
    assert!(held.contains("jobs/j1"), "{held}");
    let until = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let out = ok(&server, &["dlq", "list", "jobs", "w"]);
        if out.contains("jobs/j1") {
            break out;
        }
        assert!(Instant::now() < until, "never dead-lettered: {out}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(listed.contains("1 attempt(s)"), "{listed}");
    let redrive = ok(&server, &["dlq", "redrive", "jobs", "w", "--id", "j1"]);
    assert!(redrive.contains("1 dead letter(s) redriven"), "{redrive}");
    let again = ok(
        &server,
        &[
            "subscribe",
            "jobs",
            "-g",
            "w",
            "--count",
            "1",
            "--timeout",
            "10s",
        ],
    );
    assert!(again.contains("jobs/j1"), "{again}");
    assert!(ok(&server, &["dlq", "list", "jobs", "w"]).contains("no dead letters"));
}

#[test]
fn bad_input_exits_1_and_server_errors_exit_2_with_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    server.wait_ready(common::START_DEADLINE);
    let addr = server.endpoint();
    let cases: [(&[&str], i32, &str); 6] = [
        (&["publish", "t", "x", "--in", "10parsecs"], 1, "--in"),
        (&["publish", "t", "x", "--at", "yesterday-ish"], 1, "--at"),
        (&["publish", "t", "x", "--header", "novalue"], 1, "--header"),
        (&["publish", "__reserved", "x"], 2, "event.topic"),
        (&["groups", "describe", "t", "unknown"], 2, "NotFound"),
        (&["frobnicate"], 1, "unrecognized subcommand"),
    ];
    for (args, code, says) in cases {
        let out = chronos(&addr, args, None);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let down = chronos("http://127.0.0.1:1", &["status"], None);
    assert_eq!(down.status.code(), Some(2));
    assert!(
        text(&down.stderr).contains("cannot reach"),
        "{}",
        text(&down.stderr)
    );
    // Several nodes: the first that answers serves the command.
    let either = format!("127.0.0.1:1, {addr}");
    let out = chronos(&either, &["publish", "several", "x"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let none = chronos("127.0.0.1:1,127.0.0.1:2", &["status"], None);
    assert_eq!(none.status.code(), Some(2));
    let err = text(&none.stderr);
    assert!(err.contains(":1") && err.contains(":2"), "{err}");
    let empty = chronos(&format!("{addr},"), &["status"], None);
    assert_eq!(empty.status.code(), Some(1));
    assert!(text(&empty.stderr).contains("--addr"));
}

#[test]
fn schedules_are_created_listed_paused_triggered_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    server.wait_ready(common::START_DEADLINE);
    let out = ok(
        &server,
        &[
            "schedules",
            "create",
            "nightly",
            "reports",
            "run",
            "--cron",
            "0 30 2 * * *",
            "--time-zone",
            "Europe/Berlin",
            "--missed",
            "fire-once",
        ],
    );
    assert!(
        out.starts_with("nightly  reports  cron \"0 30 2 * * *\" (Europe/Berlin)  next "),
        "{out}"
    );
    ok(
        &server,
        &["schedules", "create", "beat", "pulse", "--every", "1s"],
    );
    let listed = json_lines(&ok(&server, &["--json", "schedules", "list"]));
    let ids: Vec<&str> = listed
        .iter()
        .map(|s| s["schedule_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{listed:?}");
    assert!(ids.contains(&"nightly") && ids.contains(&"beat"));
    let got = json_lines(&ok(
        &server,
        &["--json", "schedules", "get", "nightly", "--upcoming", "3"],
    ));
    let upcoming = got[0]["upcoming_ts"].as_array().unwrap();
    assert_eq!(upcoming.len(), 3);
    // 02:30 in Berlin is 00:30 or 01:30 UTC, a day apart.
    for t in upcoming {
        let ms = t.as_i64().unwrap();
        let secs_of_day = (ms / 1000) % 86_400;
        assert!(secs_of_day == 1_800 || secs_of_day == 5_400, "{ms}");
    }
    let paused = ok(&server, &["schedules", "pause", "beat"]);
    assert!(paused.contains("paused"), "{paused}");
    ok(&server, &["schedules", "resume", "beat"]);
    let trig = ok(&server, &["schedules", "trigger", "nightly"]);
    assert!(trig.starts_with("triggered nightly@trigger-"), "{trig}");
    ok(&server, &["schedules", "delete", "beat"]);
    let out = chronos(&server.endpoint(), &["schedules", "get", "beat"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("NotFound"),
        "{}",
        text(&out.stderr)
    );
    let bad = chronos(
        &server.endpoint(),
        &["schedules", "create", "x", "t", "--cron", "0 0 25 * * *"],
        None,
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("schedule.cron: field 'hour'"),
        "{}",
        text(&bad.stderr)
    );
    let usage = chronos(&server.endpoint(), &["schedules", "create", "x", "t"], None);
    assert_eq!(usage.status.code(), Some(1));
}
