//! Process lifecycle: health, readiness, metrics, SIGTERM, data-dir checks.

mod common;

use std::time::Duration;

use common::{event, publish_req, replay_all, Server};

#[tokio::test]
async fn http_endpoints_report_health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    assert_eq!(server.http_get("/health").unwrap(), (200, "OK".into()));
    assert_eq!(server.http_get("/ready").unwrap().0, 200);

    let mut c = server.events().await;
    for i in 0..10 {
        c.publish(publish_req(event("m", &format!("id{i}"), b"x")))
            .await
            .unwrap();
    }
    let (code, body) = server.http_get("/metrics").unwrap();
    assert_eq!(code, 200);
    for name in [
        "chronos_publish_requests_total",
        "chronos_publish_events_total",
        "chronos_publish_latency_seconds_bucket",
        "chronos_wal_written_bytes_total",
        "chronos_wal_fsyncs_total",
        "chronos_wal_segments",
        "chronos_raftlog_fsync_seconds_bucket",
        "chronos_raftlog_spare_files",
    ] {
        assert!(body.contains(name), "/metrics lacks {name}:\n{body}");
    }
    let events_new = metric(&body, "chronos_publish_events_total{outcome=\"new\"}");
    assert_eq!(events_new, 10.0, "{body}");
    // Each publish was acknowledged after a node-log fsync.
    let fsyncs = metric(&body, "chronos_raftlog_fsync_seconds_count");
    assert!(fsyncs >= 1.0, "no node-log fsync timed:\n{body}");
}

/// The server runs without transparent huge pages (faults that zero 2 MiB
/// and splits of partly freed ones stalled its threads for milliseconds).
#[cfg(target_os = "linux")]
#[test]
fn the_server_runs_without_transparent_huge_pages() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .expect("a THP_enabled line (Linux 5.0 or later)");
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

/// The value of the first sample in `body` whose line starts with `series`
/// (-1 when there is none).
fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_writes_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let mut c = server.events().await;
    for i in 0..100 {
        c.publish(publish_req(event("s", &format!("id{i}"), b"x")))
            .await
            .unwrap();
    }
    // Terminate from a blocking thread so this runtime keeps serving the still
    // connected client (which must see the server's GOAWAY and let go).
    let (server, status) = tokio::task::spawn_blocking(move || {
        let mut server = server;
        let status = server.terminate(Duration::from_secs(30));
        (server, status)
    })
    .await
    .unwrap();
    let log = server.log();
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(
        !log.contains("did not finish"),
        "an idle client held up shutdown:\n{log}"
    );
    drop(c);

    let server = Server::start(&data, &[]);
    let mut c = server.events().await;
    assert_eq!(replay_all(&mut c, "s").await.len(), 100);
}

#[test]
fn changing_the_partition_count_of_a_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(Server::start(&data, &["--partitions", "4"]));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chronos"))
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--partitions",
            "8",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("created with 4 partitions"), "{err}");
}

#[test]
fn bad_flags_and_config_exit_1_with_a_message() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chronos"))
        .args(["serve", "--partitions", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("partitions"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chronos"))
        .args(["serve", "--fsync-mode", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "usage errors exit 1");
    assert!(String::from_utf8_lossy(&out.stderr).contains("always, batch or periodic"));
}

#[tokio::test]
async fn config_file_env_and_json_logs_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chronos.toml");
    std::fs::write(&file, "partitions = 3\n[log]\nformat = \"json\"\n").unwrap();
    let data = dir.path().join("data");
    let server = common::Server::start_with_env(
        &data,
        &["--config", file.to_str().unwrap()],
        &[("CHRONOS_LIMITS__MAX_PAYLOAD_BYTES", "10")],
    );
    // From the file: three partitions, JSON logs.
    let mut admin = server.admin().await;
    let parts = admin
        .list_partitions(chronos_proto::v1::ListPartitionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .partitions;
    assert_eq!(parts.len(), 3);
    let listening = server
        .log()
        .lines()
        .find(|l| l.contains("chronos listening"))
        .unwrap()
        .to_string();
    let parsed: serde_json::Value = serde_json::from_str(&listening).expect("a JSON log line");
    assert_eq!(parsed["fields"]["message"], "chronos listening");
    // From the environment: an 11-byte payload is over the limit.
    let mut c = server.events().await;
    let err = c
        .publish(publish_req(event("t", "m", b"hello world")))
        .await
        .unwrap_err();
    assert!(err.message().contains("limit is 10"), "{}", err.message());
}
