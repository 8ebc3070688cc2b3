//! The Python SDK (`clients/python`) against a real server: installed with
//! pip into a fresh virtualenv, where the example and the README's snippet
//! run; and from the source tree after `generate.sh`, `tests/check_sdk.py`
//! and (against a server with TLS and tokens) `tests/check_secure.py`, and
//! against a 3-node cluster `tests/check_failover.py`. Each
//! runs as a child process with a deadline. Needs python3 with venv, pip,
//! grpcio and grpcio-tools (`make deps`).

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Options};
use common::Server;

/// generate.sh may wait for a concurrent run's lock (up to 120 s) before protoc.
const GENERATE_DEADLINE: Duration = Duration::from_secs(150);
/// A script's own waits are bounded well below this (15 s for the example).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);
/// Creating a virtualenv and `pip install ./clients/python` (its build
/// requirements and dependencies come from the package index or pip's cache).
const INSTALL_DEADLINE: Duration = Duration::from_secs(300);

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/python")
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion; kills it and fails the test past `deadline`.
fn run(cmd: &mut Command, deadline: Duration) -> Finished {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    // Drained on threads so a chatty child never blocks on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} still running after {deadline:?}; stdout:\n{}\nstderr:\n{}",
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Regenerates the gRPC modules (idempotent, safe when tests run it at once).
fn generate() {
    let out = run(
        Command::new("bash").arg(python_dir().join("generate.sh")),
        GENERATE_DEADLINE,
    );
    assert!(
        out.status.success(),
        "generate.sh failed ({}); run `make deps` for grpcio-tools\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

/// Runs a Python script of clients/python with `args`; it must exit 0
/// (else the test fails with its output and `logs()`). Returns its stdout.
fn run_script(script: &str, args: &[&str], logs: impl FnOnce() -> String) -> String {
    let out = run(
        Command::new("python3")
            .arg(python_dir().join(script))
            .args(args)
            .env("PYTHONPATH", python_dir()),
        SCRIPT_DEADLINE,
    );
    assert!(
        out.status.success(),
        "{script} exited with {}\nstdout:\n{}\nstderr:\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr,
        logs()
    );
    out.stdout
}

/// Generates the gRPC code, then runs a Python script of clients/python
/// against a fresh server. Returns its stdout.
fn run_script_on_fresh_server(script: &str) -> String {
    generate();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    run_script(
        script,
        &["--addr", &server.grpc, "--http", &server.http],
        || format!("server log:\n{}", server.log()),
    )
}

/// The line starting with `prefix`; fails the test if there is none.
fn line<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{stdout}"))
}

/// `flush` and `close` send their acks with `wait`: a server whose ack
/// linger is 20 s answers them at once.
#[test]
fn flush_and_close_do_not_wait_out_the_ack_linger() {
    generate();
    let dir = tempfile::tempdir().unwrap();
    let env = [("CHRONOS_DELIVERY__RECORD_LINGER", "20s")];
    let server = Server::start_with_env(&dir.path().join("data"), &[], &env);
    let stdout = run_script("tests/check_flush.py", &["--addr", &server.grpc], || {
        format!("server log:\n{}", server.log())
    });
    line(&stdout, "ok: flush answered in");
    line(&stdout, "ok: close recorded its ack in");
}

#[test]
fn wrapper_nacks_redeliver_and_errors_carry_code_and_field() {
    let stdout = run_script_on_fresh_server("tests/check_sdk.py");

    line(&stdout, "ok: nack redelivers with attempt 2, then ack");
    let refused = line(&stdout, "ok: topic __x refused: ");
    assert!(
        refused.contains("INVALID_ARGUMENT: event.topic: \"__x\" starts with"),
        "{refused}"
    );
    for check in [
        "ok: group __g refused",
        "ok: cancel of an unknown event is NOT_FOUND",
        "ok: naive datetime, at+after, negative after refused locally",
        "ok: publish_batch in order",
        "ok: cancel of a pending event",
        "ok: cancel_batch, one outcome per cancel in order",
        "ok: earliest group gets the batch",
        "ok: schedules",
        "ok: close leaves at once",
        "ok: replay by offsets, publish and due time with filters; a backward range: INVALID_ARGUMENT: offsets.to",
        "ok: dead letter after 5 nacks, redriven; groups listed, described, sought, deleted",
        "ok: acks and nacks go out together",
        "ok: closing the client closes its open subscriptions",
        "ok: 600 members subscribed and closed at once; the connection and the member that stayed live on",
        "ok: a dead node's publish retried, then UNAVAILABLE",
        "ok: bad addresses and policies refused; a down node's publish goes to the next; a trigger is not retried",
        "ok: producer: 2000 events from 8 threads in ",
        "ok: producer cancels: 200 from 4 threads",
        "all checks passed",
    ] {
        line(&stdout, check);
    }
}

/// A 3-node cluster; the client is given every node, and
/// `tests/check_failover.py` kills (SIGKILL) the node its member streams
/// from between two rounds of publishes: every publish succeeds and the
/// member, subscribed again on another node, receives every event.
#[test]
fn the_wrapper_goes_on_through_the_other_nodes_when_one_is_killed() {
    failover("KILL", "killed");
}

/// As above with the node frozen (SIGSTOP): its connections stay open and
/// silent, so the client learns it is gone only from unanswered pings.
#[test]
fn the_wrapper_goes_on_through_the_other_nodes_when_one_freezes() {
    failover("STOP", "frozen");
}

fn failover(signal: &str, how: &str) {
    generate();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(
        dir.path(),
        Options {
            // Deliveries held by the member on the lost node come back soon.
            extra_toml: "[delivery]\nack_timeout = \"3s\"\n".into(),
            ..Options::default()
        },
    );
    let nodes: Vec<String> = (1..=3)
        .map(|id| format!("{}={}", cluster.api[id - 1], cluster.node(id as u64).pid()))
        .collect();
    let stdout = run_script(
        "tests/check_failover.py",
        &["--nodes", &nodes.join(","), "--signal", signal],
        || {
            (1..=3)
                .map(|id| format!("node {id}:\n{}\n", cluster.log(id)))
                .collect()
        },
    );
    // Reaps the process the script killed or froze (SIGKILL ends both).
    for id in 1..=3 {
        cluster.kill9(id);
    }
    line(&stdout, "ok: 100 published and received through");
    line(
        &stdout,
        &format!("ok: 100 published after the node was {how}"),
    );
    line(&stdout, "ok: all 200 received");
}

/// `pip install ./clients/python` into a fresh virtualenv; then, from a
/// directory outside the source tree (so only the installed package can be
/// imported), the example and the README's snippet.
#[test]
fn the_package_installed_with_pip_runs_the_example_and_the_readme_snippet() {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    let made = run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        INSTALL_DEADLINE,
    );
    assert!(
        made.status.success(),
        "venv: {}{}",
        made.stdout,
        made.stderr
    );
    let python = venv.join("bin/python");
    let installed = run(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .arg(python_dir()),
        INSTALL_DEADLINE,
    );
    assert!(
        installed.status.success(),
        "pip install ./clients/python: {}{}",
        installed.stdout,
        installed.stderr
    );
    let elsewhere = dir.path().join("work");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let example = elsewhere.join("example.py");
    std::fs::copy(python_dir().join("examples/example.py"), &example).unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let where_from = run(
        Command::new(&python)
            .args([
                "-c",
                "import chronos_client, sys; print(chronos_client.__file__)",
            ])
            .current_dir(&elsewhere),
        SCRIPT_DEADLINE,
    );
    assert!(
        where_from.stdout.contains("site-packages"),
        "imported from {}{}",
        where_from.stdout,
        where_from.stderr
    );

    let out = run(
        Command::new(&python)
            .arg(&example)
            .args(["--addr", &server.grpc])
            .current_dir(&elsewhere),
        SCRIPT_DEADLINE,
    );
    assert!(
        out.status.success(),
        "example: {}\n{}",
        out.stdout,
        out.stderr
    );
    let published = line(&out.stdout, "published example-");
    let message_id = published
        .split_whitespace()
        .nth(1)
        .expect("published <message_id>");
    assert!(published.contains(" to example: partition "), "{published}");
    line(&out.stdout, "subscribed as group example");
    let received = line(&out.stdout, &format!("received {message_id} (attempt 1, "));
    assert!(received.ends_with("ms after its schedule_ts"), "{received}");
    let acked = line(&out.stdout, &format!("acked {message_id}"));
    assert!(acked.contains("(server acked 1)"), "{acked}");
    line(
        &out.stdout,
        &format!("{message_id}: fired, group example: acked"),
    );

    let readme = std::fs::read_to_string(python_dir().join("../../README.md")).unwrap();
    let snippet = readme
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```python block in the README");
    let code = snippet.replace("localhost:9000", &server.grpc);
    let started = Instant::now();
    let out = run(
        Command::new(&python)
            .args(["-c", &code])
            .current_dir(&elsewhere),
        SCRIPT_DEADLINE,
    );
    assert!(
        out.status.success(),
        "README snippet failed: {}\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.starts_with("order-43 b'hello' 1"),
        "{}",
        out.stdout
    );
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "delivered early"
    );
}

/// The SDK over TLS with a bearer token (`tests/check_secure.py`) against a
/// secured server.
#[test]
fn tls_and_tokens_from_python() {
    generate();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ca = chronos_tls::testing::TestCa::new("python test CA");
    let ca_path = root.join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let (cert, key) = ca
        .issue(&["localhost", "127.0.0.1"])
        .write(root, "server")
        .unwrap();
    let token = "chr_python_test_token";
    let config = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[auth]\nenabled = true\n\
         [[auth.principals]]\nname = \"py\"\ntokens = [\"{}\"]\n\
         [[auth.principals.grants]]\nrole = \"producer\"\ntopics = [\"orders.*\"]\n\
         [[auth.principals.grants]]\nrole = \"consumer\"\ntopics = [\"orders.*\"]\ngroups = [\"orders-*\"]\n",
        cert.display(),
        key.display(),
        chronos_access::hash_token(token)
    );
    let config_path = root.join("chronos.toml");
    std::fs::write(&config_path, config).unwrap();
    let server = Server::spawn(
        &root.join("data"),
        &["--config", config_path.to_str().unwrap()],
        &[],
    );
    let port = server.grpc.rsplit_once(':').unwrap().1.to_string();
    // Ready over HTTPS (every partition has a leader) before the script runs.
    let http_port = server.http.rsplit_once(':').unwrap().1.to_string();
    let until = Instant::now() + common::START_DEADLINE;
    loop {
        let ready = Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(&ca_path)
            .arg(format!("https://localhost:{http_port}/ready"))
            .output()
            .is_ok_and(|o| o.status.success());
        if ready {
            break;
        }
        assert!(Instant::now() < until, "not ready; log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run(
        Command::new("python3")
            .arg(python_dir().join("tests/check_secure.py"))
            .args(["--addr", &format!("localhost:{port}")])
            .arg("--ca")
            .arg(&ca_path)
            .args(["--token", token]),
        SCRIPT_DEADLINE,
    );
    assert!(
        out.status.success(),
        "check_secure.py exited with {}\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
        out.status,
        out.stdout,
        out.stderr,
        server.log()
    );
    for check in [
        "ok: published over TLS with a token",
        "ok: received and acked over TLS",
        "ok: PERMISSION_DENIED: principal \"py\" may not publish",
        "ok: UNAUTHENTICATED without a token",
        "ok: a bad token is refused locally",
        "all checks passed",
    ] {
        line(&out.stdout, check);
    }
}
