//! Test harness: a real `chronos serve` child process on loopback ports.
//!
//! The server binds port 0 and logs the addresses it got; the harness reads
//! them from its stderr, so tests never race for ports. Every wait has a deadline.
#![allow(dead_code)]

pub mod json;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chronos_proto::v1::admin_service_client::AdminServiceClient;
use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{
    AckItem, AckRequest, AckResponse, Delivery, Event, PublishBatchRequest, PublishBatchResponse,
    PublishRequest, ReplayEvent, ReplayRequest, SubscribeRequest,
};
use tonic::transport::Channel;

pub mod cluster;
pub mod load;
pub mod seen;

pub const START_DEADLINE: Duration = Duration::from_secs(60);

pub struct Server {
    child: Option<Child>,
    pub grpc: String,
    pub http: String,
    pub data_dir: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Starts a server on `data_dir` with extra flags and waits until /ready says so.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// Like `start`, with extra `CHRONOS_*` environment variables.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let server = Self::spawn(data_dir, extra, env);
        server.wait_ready(START_DEADLINE);
        server
    }

    /// Starts a server and waits until it listens, not until it is ready (a
    /// cluster node is ready only once enough of its peers run too).
    pub fn spawn(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = log_path(data_dir);
        let level = std::env::var("TEST_CHRONOS_LOG_LEVEL").unwrap_or_else(|_| "info".into());
        let mut child = Command::new(env!("CARGO_BIN_EXE_chronos"))
            .args([
                "serve",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("CHRONOS_LOG__LEVEL", level)
            .env_remove("CHRONOS_CONFIG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chronos");
        let stderr = child.stderr.take().unwrap();
        // From here on the child is owned by a Server, whose Drop kills it even
        // if this function panics below.
        let mut server = Server {
            grpc: String::new(),
            http: String::new(),
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            log: log.clone(),
        };
        let (tx, rx) = mpsc::channel();
        let log_path = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path)
                .unwrap();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                if line.contains("chronos listening") {
                    let _ = tx.send(line);
                }
            }
        });
        let Ok(line) = rx.recv_timeout(START_DEADLINE) else {
            panic!(
                "server did not start within {START_DEADLINE:?}; log:\n{}",
                read_log(&log)
            );
        };
        // Text logs say `grpc_addr=1.2.3.4:5`; JSON logs `"grpc_addr":"1.2.3.4:5"`.
        let field = |name: &str| {
            for (marker, end) in [(format!("{name}="), ' '), (format!("\"{name}\":\""), '"')] {
                if let Some(at) = line.find(&marker) {
                    let rest = &line[at + marker.len()..];
                    return rest.split(end).next().unwrap_or(rest).to_string();
                }
            }
            panic!("no {name} in {line}");
        };
        server.grpc = field("grpc_addr");
        server.http = field("http_addr");
        server
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub async fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::connect(self.endpoint())
            .await
            .expect("connect")
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::connect(self.endpoint())
            .await
            .expect("connect")
    }

    /// GET `path` on the HTTP listener: (status code, body).
    pub fn http_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        self.http_call("GET", path, "", &[])
    }

    /// `method path` with `body` and extra headers on the HTTP listener:
    /// (status code, body).
    pub fn http_call(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(&self.http)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let code = raw
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((code, body))
    }

    /// The sum of a metric's samples over all label sets (0 if absent).
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.http_get("/metrics").unwrap();
        body.lines()
            .filter(|l| {
                l.starts_with(name)
                    && matches!(l.as_bytes().get(name.len()), Some(b' ') | Some(b'{'))
            })
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until `metric(name)` is at least `value`; panics with the
    /// server's log after `deadline`.
    pub async fn wait_metric(&self, name: &str, value: f64, deadline: Duration) {
        let until = Instant::now() + deadline;
        while self.metric(name) < value {
            assert!(
                Instant::now() < until,
                "{name} never reached {value}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn wait_ready(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        loop {
            if let Ok((200, _)) = self.http_get("/ready") {
                return;
            }
            assert!(
                Instant::now() < until,
                "not ready within {deadline:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The running server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server runs").id()
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the running server.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit (bounded).
    pub fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > until {
                let _ = c.kill();
                panic!(
                    "server did not exit within {deadline:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Where a server's log goes: beside its data directory, or (to keep it
/// after a failed run) under `TEST_CHRONOS_LOG_DIR` when that is set.
fn log_path(data_dir: &Path) -> PathBuf {
    let name = format!("log.{}", std::process::id());
    match std::env::var_os("TEST_CHRONOS_LOG_DIR") {
        Some(dir) => {
            std::fs::create_dir_all(&dir).unwrap();
            let base = data_dir.file_name().unwrap().to_string_lossy();
            Path::new(&dir).join(format!("{base}.{name}"))
        }
        None => data_dir.with_extension(name),
    }
}

/// The wall clock in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn event(topic: &str, id: &str, payload: &[u8]) -> Event {
    Event {
        message_id: id.into(),
        topic: topic.into(),
        payload: payload.to_vec().into(),
        ..Default::default()
    }
}

pub fn publish_req(ev: Event) -> PublishRequest {
    PublishRequest {
        event: Some(ev),
        reschedule: false,
    }
}

pub fn batch_req(events: Vec<Event>) -> PublishBatchRequest {
    PublishBatchRequest { events }
}

/// PublishBatch that must succeed.
pub async fn publish_ok(
    client: &mut EventServiceClient<Channel>,
    events: Vec<Event>,
) -> PublishBatchResponse {
    client
        .publish_batch(batch_req(events))
        .await
        .expect("publish_batch")
        .into_inner()
}

/// Every event of every partition, by offset range [0, end).
pub async fn replay_all(client: &mut EventServiceClient<Channel>, topic: &str) -> Vec<ReplayEvent> {
    use chronos_proto::v1::{replay_request::Range, OffsetRange};
    let req = ReplayRequest {
        topic: topic.into(),
        partition_id: None,
        range: Some(Range::Offsets(OffsetRange { from: 0, to: 0 })),
        key: String::new(),
        ..Default::default()
    };
    let mut stream = client.replay(req).await.expect("replay").into_inner();
    let mut out = Vec::new();
    while let Some(ev) = stream.message().await.expect("replay stream") {
        out.push(ev);
    }
    out
}

/// A consumer-group member over `Subscribe`, acking with unary `Ack`.
pub struct Member {
    pub group: String,
    pub stream: tonic::Streaming<chronos_proto::v1::Delivery>,
    pub client: EventServiceClient<Channel>,
}

pub fn subscribe_req(group: &str, topic: &str, max_inflight: u32) -> SubscribeRequest {
    SubscribeRequest {
        consumer_group: group.into(),
        topic: topic.into(),
        partition_id: None,
        max_inflight,
        start: 0,
        start_ts: 0,
        keep_unacked: false,
        max_deliveries: 0,
        max_wait_ms: 0,
    }
}

impl Member {
    pub async fn join(server: &Server, req: SubscribeRequest) -> Member {
        let mut client = server.events().await;
        let group = req.consumer_group.clone();
        let stream = client.subscribe(req).await.expect("subscribe").into_inner();
        Member {
            group,
            stream,
            client,
        }
    }

    /// The next delivery, or None if none arrives within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Delivery> {
        match tokio::time::timeout(wait, self.stream.message()).await {
            Ok(msg) => msg.expect("subscribe stream"),
            Err(_) => None,
        }
    }

    /// The next delivery; fails the test if none arrives within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Delivery {
        self.next_within(wait)
            .await
            .unwrap_or_else(|| panic!("no delivery for group {} within {wait:?}", self.group))
    }

    pub async fn settle(&mut self, ids: &[&str], nack: bool, nack_delay_ms: u64) -> AckResponse {
        let items = ids
            .iter()
            .map(|id| AckItem {
                delivery_id: id.to_string(),
                nack,
                nack_delay_ms,
            })
            .collect();
        let req = AckRequest {
            consumer_group: self.group.clone(),
            items,
            wait: true,
        };
        self.client.ack(req).await.expect("ack").into_inner()
    }

    pub async fn ack(&mut self, ids: &[&str]) -> AckResponse {
        self.settle(ids, false, 0).await
    }
}
