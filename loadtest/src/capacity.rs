//! Mode `capacity`: fill the server with `--events` pending events due far
//! ahead, report its resident memory (`--server-pid`), and optionally how long
//! it takes to restart: SIGTERM to the pid, run `--restart-cmd`, poll
//! `--ready-url` until it answers 200.
//!
//! The restart command runs under `sh -c` with stdin, stdout and stderr closed
//! (redirect inside the command to keep its logs), so it may outlive this run;
//! its pid is reported (`exec` in the command makes that the server's pid).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::progress::Table;
use crate::report::now_us;
use crate::workload::{Due, Plan, Session, WorkloadArgs};

/// How often `--ready-url` and the old process are polled.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Connect and read timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Args, Clone)]
pub struct CapacityArgs {
    /// gRPC address of the node.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    addr: String,
    /// Topic to fill (default: `lt-<run tag>`).
    #[arg(long)]
    topic: Option<String>,
    /// Pending events to add.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Events per PublishBatch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent publishers, each on its own connection.
    #[arg(long, default_value_t = 4)]
    publish_clients: usize,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// The first event is due this far ahead.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    due_in: Duration,
    /// Due times spread evenly over this span after `--due-in`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    due_spread: Duration,
    /// Stop filling after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The server's pid: its VmRSS is sampled while filling, and it is the
    /// process `--restart-cmd` replaces.
    #[arg(long)]
    server_pid: Option<u32>,
    /// After filling: SIGTERM the server, then start it again with this shell command.
    #[arg(long, requires_all = ["server_pid", "ready_url"])]
    restart_cmd: Option<String>,
    /// The restarted server's readiness URL, e.g. `http://127.0.0.1:8080/ready`.
    #[arg(long, requires = "restart_cmd")]
    ready_url: Option<String>,
    /// Bound on the old server's exit and on the new one's readiness, each.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    restart_timeout: Duration,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

impl CapacityArgs {
    fn workload(&self) -> WorkloadArgs {
        WorkloadArgs {
            addr: self.addr.clone(),
            topic: self.topic.clone(),
            groups: 1,
            consumers: 1,
            max_inflight: 1,
            events: self.events,
            publish_clients: self.publish_clients,
            batch: self.batch,
            payload: self.payload,
            keys: 0,
            ack_batch: 1,
            resubscribe: false,
            timeout: Some(self.duration),
            server_pid: self.server_pid,
            json: self.json,
        }
    }
}

/// Runs the `capacity` mode and prints its summary; fails if an event was not
/// accepted or the restart did not come back ready in time.
pub async fn run(args: CapacityArgs) -> anyhow::Result<()> {
    let w = args.workload();
    w.validate()?;
    let spread_s = args.due_spread.as_secs_f64().max(1e-3);
    let due = Due::Spread {
        first_ms: now_us() / 1000 + args.due_in.as_millis() as i64,
        rate: args.events as f64 / spread_s,
        shuffle: 0,
    };
    let session = Session::start(&w, Plan::new(&w, due))?;
    let topic = session.plan.topic.clone();
    let publish = session
        .publish(&w, Instant::now() + args.duration, None)
        .await?;
    let outcome = session.finish(Vec::new()).await?;
    let restart = match (&args.restart_cmd, &args.ready_url, args.server_pid) {
        (Some(cmd), Some(url), Some(pid)) => {
            Some(restart(pid, cmd, url, args.restart_timeout).await?)
        }
        _ => None,
    };
    let seconds = (publish.finished_us - publish.started_us) as f64 / 1e6;
    let rss = outcome.rss.as_ref();
    let summary = json!({
        "mode": "capacity", "topic": topic, "events": args.events, "payload_bytes": args.payload,
        "publish": {"accepted": publish.accepted, "failed": publish.failed, "rpc_errors": publish.rpc_errors,
                    "duplicates": publish.duplicates, "seconds": seconds,
                    "events_per_sec": publish.accepted as f64 / seconds.max(1e-9)},
        "server_rss_mib": rss.map(|r| json!({"max": r.max_mib(), "final": r.final_mib(), "samples": r.samples})),
        "restart": restart,
    });
    if args.json {
        println!("{summary}");
    } else {
        table(&summary).print();
    }
    ensure!(
        publish.failed == 0,
        "{} of {} events were not accepted",
        publish.failed,
        args.events
    );
    Ok(())
}

fn table(summary: &Value) -> Table {
    let mut table = Table::new(format!(
        "mode capacity  topic {}  events {}  payload {} B",
        summary["topic"].as_str().unwrap_or(""),
        summary["events"],
        summary["payload_bytes"]
    ));
    let p = &summary["publish"];
    table.row(
        "filled",
        format!(
            "{} events in {:.2}s = {:.0}/s  (failed {}, RPC errors {})",
            p["accepted"],
            p["seconds"].as_f64().unwrap_or(0.0),
            p["events_per_sec"].as_f64().unwrap_or(0.0),
            p["failed"],
            p["rpc_errors"]
        ),
    );
    let rss = &summary["server_rss_mib"];
    if !rss.is_null() {
        table.row(
            "server RSS",
            format!(
                "max {:.1} MiB  final {:.1} MiB",
                rss["max"].as_f64().unwrap_or(0.0),
                rss["final"].as_f64().unwrap_or(0.0)
            ),
        );
    }
    let restart = &summary["restart"];
    if !restart.is_null() {
        table.row(
            "restart",
            format!(
                "SIGTERM to exit {:.3}s, start to ready {:.3}s (new pid {})",
                restart["shutdown_seconds"].as_f64().unwrap_or(0.0),
                restart["start_to_ready_seconds"].as_f64().unwrap_or(0.0),
                restart["pid"]
            ),
        );
    }
    table
}

/// SIGTERM `pid`, wait for it to exit, run `cmd`, poll `url` until 200.
async fn restart(pid: u32, cmd: &str, url: &str, timeout: Duration) -> anyhow::Result<Value> {
    let (host, path) = parse_http_url(url)?;
    let stopping = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .context("running kill")?;
    ensure!(killed.success(), "kill -TERM {pid} failed");
    while alive(pid) {
        if stopping.elapsed() > timeout {
            bail!("server {pid} still running {timeout:?} after SIGTERM");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let shutdown = stopping.elapsed();
    let starting = Instant::now();
    let mut child = Command::new("sh")
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    loop {
        let (host, path) = (host.clone(), path.clone());
        let status = tokio::task::spawn_blocking(move || probe(&host, &path)).await?;
        if status == Some(200) {
            break;
        }
        if let Some(exit) = child.try_wait()? {
            bail!("restart command exited ({exit}) before {url} was ready");
        }
        if starting.elapsed() > timeout {
            bail!("{url} not ready {timeout:?} after the restart");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let ready = starting.elapsed();
    Ok(
        json!({"shutdown_seconds": shutdown.as_secs_f64(), "start_to_ready_seconds": ready.as_secs_f64(),
              "total_seconds": (shutdown + ready).as_secs_f64(), "pid": child.id()}),
    )
}

/// Whether `pid` still runs (a zombie waiting for its parent counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// `http://host:port/path` → (`host:port`, `/path`).
fn parse_http_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--ready-url {url:?} must start with http://"))?;
    let (host, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    ensure!(!host.is_empty(), "--ready-url {url:?} has no host");
    Ok((host.to_string(), path.to_string()))
}

/// One GET; the status code, or `None` if the server did not answer.
fn probe(host: &str, path: &str) -> Option<u16> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .ok()?
        .next()?;
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_url_splits_into_host_and_path() {
        let parsed = parse_http_url("http://127.0.0.1:8080/ready").unwrap();
        assert_eq!(parsed, ("127.0.0.1:8080".to_string(), "/ready".to_string()));
        let bare = parse_http_url("http://localhost:1").unwrap();
        assert_eq!(bare.1, "/");
        assert!(parse_http_url("https://x/ready").is_err());
        assert!(parse_http_url("http:///ready").is_err());
    }

    #[test]
    fn own_process_is_alive_and_a_bogus_pid_is_not() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX - 1));
    }
}
