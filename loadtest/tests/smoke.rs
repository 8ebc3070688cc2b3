//! Smoke test: every mode runs for about a second against a real `chronos serve`
//! child process on loopback ports, and its `--json` summary is well-formed and
//! adds up (every published event delivered, none early).
//!
//! The server binary is the workspace's `<target>/debug/chronos`, next to this
//! test's `deps/` directory (`make test` builds every binary first). Every wait
//! has a deadline.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const SERVER_START_DEADLINE: Duration = Duration::from_secs(30);
const RUN_DEADLINE: Duration = Duration::from_secs(40);
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// `<target>/debug/chronos`, found from this executable's `<target>/debug/deps/`.
fn chronos_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let debug = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in <target>/<profile>/deps");
    let bin = debug.join("chronos");
    assert!(
        bin.is_file(),
        "server binary {} is missing: build it first with `cargo build --workspace` (`make test` does)",
        bin.display()
    );
    bin
}

/// A `chronos serve` child on ephemeral loopback ports; killed on drop.
struct Server {
    child: Child,
    grpc: String,
    http: String,
    data_dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let data_dir = tempfile::tempdir().expect("tempdir");
        Server::start_on(data_dir, "127.0.0.1:0", "127.0.0.1:0")
    }

    /// `kill -9`, then the same data directory and addresses again.
    fn restart(mut self) -> Server {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (grpc, http) = (self.grpc.clone(), self.http.clone());
        let data_dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("tempdir"));
        Server::start_on(data_dir, &grpc, &http)
    }

    fn start_on(data_dir: tempfile::TempDir, grpc: &str, http: &str) -> Server {
        let mut child = Command::new(chronos_bin())
            .args(["serve", "--grpc-addr", grpc, "--http-addr", http])
            .arg("--data-dir")
            .arg(data_dir.path())
            .env("CHRONOS_LOG__LEVEL", "info")
            .env_remove("CHRONOS_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chronos serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Keeps draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("chronos listening") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(SERVER_START_DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "chronos serve did not report its addresses within {SERVER_START_DEADLINE:?}"
                );
            }
        };
        let field = |name: &str| {
            let marker = format!("{name}=");
            let at = line
                .find(&marker)
                .unwrap_or_else(|| panic!("no {name} in {line}"));
            let rest = &line[at + marker.len()..];
            rest.split(' ').next().unwrap_or(rest).to_string()
        };
        let (grpc, http) = (field("grpc_addr"), field("http_addr"));
        Server {
            child,
            grpc,
            http,
            data_dir,
        }
    }

    fn addr(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// A counter or gauge from `/metrics`, summed over its labels (0 when absent).
    fn metric(&self, name: &str) -> f64 {
        use std::io::Write;
        let mut conn = std::net::TcpStream::connect(&self.http).expect("connect to /metrics");
        conn.set_read_timeout(Some(EXIT_DEADLINE)).expect("timeout");
        write!(conn, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").expect("request");
        let mut text = String::new();
        let _ = conn.read_to_string(&mut text);
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `chronos-loadtest <args> --json` within [`RUN_DEADLINE`]; asserts it
/// exits 0 and returns its one JSON summary.
fn loadtest(args: &[&str]) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chronos-loadtest"))
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chronos-loadtest");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let until = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chronos-loadtest {args:?} ran past {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(
        status.success(),
        "chronos-loadtest {args:?}: {status}\nstdout: {stdout}\nstderr: {stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line expected, got: {stdout}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

/// Starts a server, runs `chronos-loadtest <mode> --addr <it> <args> --json`
/// against it, and returns the summary.
fn run_mode(mode: &str, args: &[&str]) -> Value {
    let server = Server::start();
    let addr = server.addr();
    let mut all = vec![mode, "--addr", &addr];
    all.extend_from_slice(args);
    loadtest(&all)
}

fn u64_at(summary: &Value, pointer: &str) -> u64 {
    summary
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no integer at {pointer} in {summary}"))
}

/// p50 ≤ p90 ≤ p99 ≤ p99.9 ≤ max, all present.
fn check_latency(latency: &Value) {
    let at = |key: &str| {
        latency[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no {key} in {latency}"))
    };
    let ordered = ["p50", "p90", "p99", "p999", "max"].map(at);
    assert!(
        ordered.windows(2).all(|w| w[0] <= w[1]) && ordered[0] >= 0.0,
        "percentiles out of order: {latency}"
    );
}

/// A delivery mode's counts add up: all `events` published, each delivered to
/// its group once at least, none early, every delivery acked.
fn check_delivery(summary: &Value, mode: &str, events: u64) {
    assert_eq!(summary["mode"], mode, "{summary}");
    assert_eq!(u64_at(summary, "/events"), events);
    assert_eq!(u64_at(summary, "/publish/accepted"), events, "{summary}");
    assert_eq!(u64_at(summary, "/publish/failed"), 0, "{summary}");
    assert_eq!(u64_at(summary, "/delivery/unique"), events, "{summary}");
    assert_eq!(u64_at(summary, "/delivery/missing"), 0, "{summary}");
    assert_eq!(u64_at(summary, "/delivery/early"), 0, "{summary}");
    assert_eq!(u64_at(summary, "/delivery/foreign"), 0, "{summary}");
    assert_eq!(summary["delivery"]["timed_out"], false, "{summary}");
    assert_eq!(
        u64_at(summary, "/delivery/deliveries"),
        events + u64_at(summary, "/delivery/duplicates"),
        "{summary}"
    );
    assert_eq!(
        u64_at(summary, "/acks/sent"),
        u64_at(summary, "/delivery/deliveries"),
        "{summary}"
    );
    check_latency(&summary["lateness_ms"]);
}

#[test]
fn publish_closed_loop() {
    let summary = run_mode(
        "publish",
        &["--clients", "2", "--duration", "1s", "--warmup", "0s"],
    );
    assert_eq!(summary["mode"], "publish");
    assert_eq!(summary["loop"], "closed");
    let events = u64_at(&summary, "/events");
    assert!(events > 0, "{summary}");
    assert_eq!(
        u64_at(&summary, "/rpcs"),
        events,
        "batch 1: one event per RPC"
    );
    assert_eq!(u64_at(&summary, "/errors"), 0, "{summary}");
    check_latency(&summary["latency_ms"]);
}

/// `--cancel`: every event published is cancelled right after (one by
/// one, then in batches), so the server ends the runs holding none pending.
#[test]
fn publish_with_cancels_leaves_nothing_pending() {
    let server = Server::start();
    let addr = server.addr();
    let summary = loadtest(&[
        "publish",
        "--addr",
        &addr,
        "--clients",
        "2",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--due-in",
        "1h",
        "--cancel",
    ]);
    let events = u64_at(&summary, "/events");
    assert!(events > 0, "{summary}");
    assert_eq!(u64_at(&summary, "/cancelled"), events, "{summary}");
    assert_eq!(
        u64_at(&summary, "/rpcs"),
        2 * events,
        "a publish and a cancel each"
    );
    assert_eq!(u64_at(&summary, "/errors"), 0, "{summary}");
    // With batches: one `CancelBatch` per `PublishBatch`, each finding
    // every event of its batch pending.
    let batched = loadtest(&[
        "publish",
        "--addr",
        &addr,
        "--clients",
        "2",
        "--batch",
        "50",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--due-in",
        "1h",
        "--cancel",
    ]);
    let events = u64_at(&batched, "/events");
    assert!(events > 0 && events.is_multiple_of(50), "{batched}");
    assert_eq!(u64_at(&batched, "/cancelled"), events, "{batched}");
    assert_eq!(u64_at(&batched, "/rpcs"), 2 * events / 50, "{batched}");
    assert_eq!(u64_at(&batched, "/errors"), 0, "{batched}");
    // The pending gauge is refreshed when /metrics is read.
    let start = std::time::Instant::now();
    while server.metric("chronos_pending_events") != 0.0 {
        assert!(
            start.elapsed() < EXIT_DEADLINE,
            "events left pending: {summary}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The gauge counts: three more, not cancelled, show.
    loadtest(&[
        "publish",
        "--addr",
        &addr,
        "--clients",
        "1",
        "--events",
        "3",
        "--warmup",
        "0s",
        "--due-in",
        "1h",
    ]);
    while server.metric("chronos_pending_events") != 3.0 {
        assert!(
            start.elapsed() < 2 * EXIT_DEADLINE,
            "the pending gauge never showed 3"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn publish_open_loop_keeps_to_its_rate() {
    let summary = run_mode(
        "publish",
        &[
            "--clients",
            "4",
            "--batch",
            "5",
            "--rate",
            "100",
            "--duration",
            "1s",
            "--warmup",
            "0s",
        ],
    );
    assert_eq!(summary["loop"], "open");
    // 100 RPCs are due in the second: slots 0..=99 (the 101st would be at 1 s).
    let rpcs = u64_at(&summary, "/rpcs");
    assert_eq!(rpcs, 100, "{summary}");
    assert_eq!(u64_at(&summary, "/events"), rpcs * 5);
    assert_eq!(u64_at(&summary, "/errors"), 0, "{summary}");
    check_latency(&summary["latency_ms"]);
}

/// With `--resubscribe`, members whose server goes away (`kill -9`, then
/// the same node again) subscribe again and get every event, none early.
#[test]
fn members_subscribe_again_after_their_server_restarts() {
    let server = Server::start();
    let addr = server.addr();
    let args: Vec<String> = [
        "schedule",
        "--addr",
        &addr,
        "--resubscribe",
        "--events",
        "300",
        "--rate",
        "100",
        "--lead",
        "3s",
        "--batch",
        "100",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let run = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        loadtest(&args)
    });
    // Everything published (durably) before the first event is due.
    let until = Instant::now() + RUN_DEADLINE;
    while server.metric("chronos_publish_events_total") < 300.0 {
        assert!(Instant::now() < until, "the events were not published");
        std::thread::sleep(Duration::from_millis(20));
    }
    let server = server.restart();
    let summary = run.join().expect("the load generator");
    assert_eq!(u64_at(&summary, "/delivery/unique"), 300, "{summary}");
    assert_eq!(u64_at(&summary, "/delivery/missing"), 0, "{summary}");
    assert_eq!(u64_at(&summary, "/delivery/early"), 0, "{summary}");
    let errors = summary["delivery"]["stream_errors"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(errors > 0, "no stream broke: {summary}");
    drop(server);
}

#[test]
fn schedule_delivers_every_event_never_early() {
    let summary = run_mode(
        "schedule",
        &[
            "--events", "500", "--rate", "1000", "--lead", "300ms", "--batch", "100",
        ],
    );
    check_delivery(&summary, "schedule", 500);
}

/// Due times out of publish order, paced, with a window of one per member,
/// on the partitions of two routing keys.
#[test]
fn schedule_shuffled_and_paced_with_a_window_of_one() {
    let summary = run_mode(
        "schedule",
        &[
            "--events",
            "400",
            "--rate",
            "400",
            "--lead",
            "600ms",
            "--batch",
            "20",
            "--paced",
            "--shuffle",
            "300ms",
            "--max-inflight",
            "1",
            "--keys",
            "2",
        ],
    );
    check_delivery(&summary, "schedule", 400);
    assert!(
        summary["due"]
            .as_str()
            .unwrap_or("")
            .contains("out of order"),
        "{summary}"
    );
}

#[test]
fn scheduled_is_an_alias_of_schedule() {
    let summary = run_mode(
        "scheduled",
        &[
            "--events",
            "200",
            "--burst",
            "--lead",
            "200ms",
            "--groups",
            "2",
            "--consumers",
            "1",
        ],
    );
    assert_eq!(summary["mode"], "schedule");
    // Two groups: each gets every event.
    assert_eq!(u64_at(&summary, "/delivery/unique"), 400, "{summary}");
    assert_eq!(u64_at(&summary, "/delivery/early"), 0, "{summary}");
    assert_eq!(u64_at(&summary, "/delivery/missing"), 0, "{summary}");
}

#[test]
fn deliver_drains_the_backlog() {
    let summary = run_mode("deliver", &["--events", "1000", "--batch", "200"]);
    check_delivery(&summary, "deliver", 1000);
    assert!(summary["lag_wait_seconds"].is_f64(), "{summary}");
    assert!(
        summary["delivery"]["drain_unique_per_sec"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{summary}"
    );
}

#[test]
fn e2e_reports_publish_to_delivery_latency() {
    let summary = run_mode("e2e", &["--events", "300", "--rate", "300", "--batch", "3"]);
    check_delivery(&summary, "e2e", 300);
    check_latency(&summary["publish_to_delivery_ms"]);
}

#[test]
fn recurring_schedules_fire_each_occurrence_once() {
    let summary = run_mode(
        "recurring",
        &[
            "--schedules",
            "50",
            "--period",
            "1s",
            "--lead",
            "1s",
            "--measure",
            "8s",
        ],
    );
    assert_eq!(summary["mode"], "recurring", "{summary}");
    let expected = u64_at(&summary, "/occurrences_expected");
    assert!(expected >= 50, "{summary}");
    assert_eq!(
        u64_at(&summary, "/occurrences_measured"),
        expected,
        "{summary}"
    );
    assert_eq!(u64_at(&summary, "/early"), 0, "{summary}");
    assert_eq!(u64_at(&summary, "/duplicates"), 0, "{summary}");
}

/// Kills a pid on drop: the restarted server is not this test's child.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
        let until = Instant::now() + EXIT_DEADLINE;
        while Path::new(&format!("/proc/{}", self.0)).exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn capacity_fills_then_restarts_to_ready() {
    let server = Server::start();
    let addr = server.addr();
    let pid = server.child.id().to_string();
    // The old server's ports are free again once it has exited.
    let restart = format!(
        "exec {} serve --grpc-addr {} --http-addr {} --data-dir {}",
        chronos_bin().display(),
        server.grpc,
        server.http,
        server.data_dir.path().display()
    );
    let ready = format!("http://{}/ready", server.http);
    let summary = loadtest(&[
        "capacity",
        "--addr",
        &addr,
        "--events",
        "2000",
        "--batch",
        "500",
        "--server-pid",
        &pid,
        "--restart-cmd",
        &restart,
        "--ready-url",
        &ready,
        "--restart-timeout",
        "20s",
    ]);
    let restarted = summary["restart"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no restart pid in {summary}"));
    let _restarted = KillOnDrop(restarted as u32);
    assert_eq!(summary["mode"], "capacity");
    assert_eq!(u64_at(&summary, "/publish/accepted"), 2000, "{summary}");
    assert_eq!(u64_at(&summary, "/publish/failed"), 0, "{summary}");
    assert!(
        summary["server_rss_mib"]["max"].as_f64().unwrap_or(0.0) > 1.0,
        "{summary}"
    );
    assert!(
        summary["restart"]["start_to_ready_seconds"]
            .as_f64()
            .unwrap_or(-1.0)
            >= 0.0,
        "{summary}"
    );
    // The restarted node answers on the same address.
    let summary = loadtest(&[
        "publish",
        "--addr",
        &addr,
        "--clients",
        "1",
        "--events",
        "10",
        "--duration",
        "5s",
        "--warmup",
        "0s",
    ]);
    assert!(u64_at(&summary, "/events") >= 10, "{summary}");
}

/// `plot` draws the three PNGs from summaries the other modes wrote, and those
/// summaries carry the percentile curves it reads.
#[test]
fn plot_draws_pngs_from_saved_summaries() {
    let server = Server::start();
    let addr = server.addr();
    let dir = tempfile::tempdir().expect("tempdir");
    let short = ["--duration", "1s", "--warmup", "0s", "--addr", &addr];
    let lateness = loadtest(
        &[
            &["schedule", "--addr", &addr][..],
            &["--events", "300", "--rate", "1000", "--lead", "300ms"],
        ]
        .concat(),
    );
    let mut batch = Vec::new();
    for size in ["1", "10"] {
        batch.push(loadtest(
            &[&["publish", "--clients", "2", "--batch", size][..], &short].concat(),
        ));
    }
    let load = loadtest(&[&["publish", "--clients", "4", "--rate", "200"][..], &short].concat());
    for (summary, key) in [
        (&lateness, "lateness_curve_ms"),
        (&batch[0], "latency_curve_ms"),
        (&load, "latency_curve_ms"),
    ] {
        let points = summary[key].as_array().map_or(0, Vec::len);
        assert!(points >= 10, "{key} in {summary}");
    }
    let save = |name: &str, summaries: &[&Value]| {
        let text: String = summaries.iter().map(|s| format!("{s}\n")).collect();
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write summary");
        path
    };
    let lateness = save("lateness.json", &[&lateness]);
    let batch = save("batch.json", &batch.iter().collect::<Vec<_>>());
    let load = save("load.json", &[&load]);
    let out = dir.path().join("img");
    let output = Command::new(env!("CARGO_BIN_EXE_chronos-loadtest"))
        .arg("plot")
        .arg("--out-dir")
        .arg(&out)
        .arg("--lateness")
        .arg(&lateness)
        .arg("--batch")
        .arg(&batch)
        .arg("--load")
        .arg(&load)
        .stdin(Stdio::null())
        .output()
        .expect("run chronos-loadtest plot");
    assert!(
        output.status.success(),
        "plot: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for png in [
        "lateness.png",
        "publish-vs-batch.png",
        "latency-vs-load.png",
    ] {
        let bytes = std::fs::read(out.join(png)).expect(png);
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{png} is not a PNG"
        );
    }
}
