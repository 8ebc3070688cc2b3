//! The web console in a real browser: a server with data in it (pending
//! events, a consumer group with a dead letter), then headless Chromium
//! driven by selenium (`tests/console/check_console.py`) loads each page,
//! checks its numbers against the HTTP API, cancels an event and redrives
//! the dead letter through the page's buttons, and saves screenshots
//! (under the target directory, `console-screenshots/`). Needs Debian's
//! chromium and chromium-driver and selenium for python3 (`make deps`).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{now_ms, subscribe_req, Member, Server};

const WAIT: Duration = Duration::from_secs(20);
const SCRIPT_DEADLINE: Duration = Duration::from_secs(180);

fn post(server: &Server, path: &str, body: &str) {
    let (code, answer) = server.http_call("POST", path, body, &[]).unwrap();
    assert_eq!(code, 200, "POST {path}: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_what_the_api_says_and_its_buttons_work() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("CHRONOS_DELIVERY__MAX_ATTEMPTS", "1")];
    let server = Server::start_with_env(&dir.path().join("data"), &[], &env);
    // The page and its assets: this origin only, by policy.
    let (code, page) = server.http_get("/").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("/console/app.js"), "{page}");

    let base = now_ms() + 600_000;
    let events: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"topic":"orders","message_id":"o-{i}","key":"c{}","schedule_ts":{},"payload_json":{{"order":{i}}}}}"#,
                i % 5,
                base + i * 60_000
            )
        })
        .collect();
    post(
        &server,
        "/v1/events/batch",
        &format!(r#"{{"events":[{}]}}"#, events.join(",")),
    );
    // A group with one dead letter (max_attempts 1: a nack) and four acked.
    let mut m = Member::join(&server, subscribe_req("workers", "jobs", 10)).await;
    for i in 0..5 {
        post(
            &server,
            "/v1/events",
            &format!(r#"{{"topic":"jobs","message_id":"j-{i}","payload_json":"job {i}"}}"#),
        );
    }
    for _ in 0..5 {
        let d = m.next(WAIT).await;
        let nack = d.event.as_ref().unwrap().message_id == "j-3";
        m.settle(&[&d.delivery_id], nack, 0).await;
    }
    let until = Instant::now() + WAIT;
    loop {
        let (_, dead) = server.http_get("/v1/topics/jobs/groups/workers").unwrap();
        if dead.contains("\"dead_letters\":\"1\"") {
            break;
        }
        assert!(Instant::now() < until, "no dead letter: {dead}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A group nobody consumes any more: it joined after the jobs fired (lag
    // 0) and its member left. The page seeks it back and deletes it.
    drop(Member::join(&server, subscribe_req("auditors", "jobs", 10)).await);

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console/check_console.py");
    let url = format!("http://{}", server.http);
    let mut child = Command::new("python3")
        .arg(&script)
        .args(["--url", &url])
        .arg("--shots")
        .arg(&shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (with selenium: `make deps`)");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > SCRIPT_DEADLINE {
            let _ = child.kill();
            panic!("check_console.py still running after {SCRIPT_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "check_console.py: {status}\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert!(stdout.contains("all console checks passed"), "{stdout}");
    for name in [
        "overview",
        "topics",
        "topic",
        "events",
        "event",
        "groups",
        "dead-letters",
    ] {
        let png = shots.join(format!("{name}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            png.display()
        );
    }
    // The redriven dead letter is delivered again.
    let again = m.next(WAIT).await;
    assert_eq!(again.event.unwrap().message_id, "j-3");
    assert!(again.attempt >= 1);
}
