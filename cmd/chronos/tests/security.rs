//! A secured node, over real TLS on loopback: plaintext refused, tokens
//! checked, every role × RPC pair allowed or denied as the README's table
//! says, denials and state changes in the audit file, tokens rotated and
//! certificates reloaded on SIGHUP (an open stream survives), quotas, and
//! the README's grpcurl lines for a secured server run verbatim.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chronos_client::{Bearer, Conn, Tls};
use chronos_proto::v1::admin_service_client::AdminServiceClient;
use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::*;
use chronos_tls::testing::TestCa;
use common::Server;
use tonic::transport::Endpoint;
use tonic::Code;

/// Principals of the test config and their tokens.
const ROLES: [&str; 5] = ["admin", "producer", "consumer", "viewer", "limited"];

struct Secured {
    _dir: tempfile::TempDir,
    root: PathBuf,
    server: Server,
    ca_pem: Vec<u8>,
    tokens: BTreeMap<&'static str, String>,
}

fn token_of(role: &str) -> String {
    format!("chr_test_{role}_0123456789")
}

fn principal(name: &str, token: &str, grants: &str, extra: &str) -> String {
    format!(
        "[[principals]]\nname = \"{name}\"\ntokens = [\"{}\"]\n{extra}\n{grants}\n",
        chronos_access::hash_token(token)
    )
}

/// The principals file: every principal but the admin (kept in the main
/// config) lives here, so rotating a token is a rewrite and a SIGHUP.
fn principals_file(producer_token: &str) -> String {
    let grant = |role: &str, topics: &str, groups: &str| {
        format!(
            "[[principals.grants]]\nrole = \"{role}\"\ntopics = [{topics}]\ngroups = [{groups}]\n"
        )
    };
    [
        principal(
            "orders-producer",
            producer_token,
            &grant("producer", "\"orders.*\"", "\"*\""),
            "",
        ),
        principal(
            "orders-consumer",
            &token_of("consumer"),
            &grant("consumer", "\"orders.*\"", "\"orders-*\""),
            "",
        ),
        principal(
            "watcher",
            &token_of("viewer"),
            &grant("viewer", "\"*\"", "\"*\""),
            "",
        ),
        principal(
            "limited",
            &token_of("limited"),
            &grant("producer", "\"quota.*\"", "\"*\""),
            "quota = { publish_events_per_sec = 20 }",
        ),
    ]
    .concat()
}

async fn start() -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let certs = root.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = TestCa::new("chronos test CA");
    let ca_path = certs.join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let (cert, key) = ca
        .issue(&["localhost", "127.0.0.1"])
        .write(&certs, "server")
        .unwrap();
    std::fs::write(
        root.join("principals.toml"),
        principals_file(&token_of("producer")),
    )
    .unwrap();
    // Client certificates from their own CA authenticate as `ops`.
    let clients_ca = TestCa::new("chronos clients CA");
    std::fs::write(certs.join("clients-ca.pem"), clients_ca.cert_pem()).unwrap();
    clients_ca
        .issue_client("ops.clients.example", &[])
        .write(&certs, "ops")
        .unwrap();
    clients_ca
        .issue_client("nobody.clients.example", &[])
        .write(&certs, "nobody")
        .unwrap();
    let config = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\n\
         [auth]\nenabled = true\nopen_metrics = false\nprincipals_file = \"{}\"\n\
         [[auth.principals]]\nname = \"root\"\ntokens = [\"{}\"]\n\
         [[auth.principals.grants]]\nrole = \"admin\"\n\
         [[auth.principals]]\nname = \"ops\"\ncert_names = [\"ops.clients.example\"]\n\
         [[auth.principals.grants]]\nrole = \"viewer\"\n\n\
         [audit]\npath = \"{}\"\n",
        cert.display(),
        key.display(),
        certs.join("clients-ca.pem").display(),
        root.join("principals.toml").display(),
        chronos_access::hash_token(&token_of("admin")),
        root.join("audit.log").display(),
    );
    let config_path = root.join("chronos.toml");
    std::fs::write(&config_path, config).unwrap();
    let server = Server::spawn(
        &root.join("data"),
        &["--config", config_path.to_str().unwrap()],
        &[],
    );
    let tokens = ROLES.iter().map(|&r| (r, token_of(r))).collect();
    let secured = Secured {
        _dir: dir,
        root,
        server,
        ca_pem: std::fs::read(ca_path).unwrap(),
        tokens,
    };
    secured.wait_ready().await;
    secured
}

impl Secured {
    fn tls(&self) -> Tls {
        Tls {
            ca_pem: self.ca_pem.clone(),
            identity: None,
            domain: Some("localhost".into()),
        }
    }

    async fn conn_with(
        &self,
        tls: &Tls,
        token: Option<&str>,
    ) -> Result<Conn, tonic::transport::Error> {
        let channel = Endpoint::from_shared(format!("https://{}", self.server.grpc))
            .unwrap()
            .tls_config(tls.config())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok(Conn::new(channel, Bearer::new(token).unwrap()))
    }

    async fn conn(&self, token: Option<&str>) -> Conn {
        self.conn_with(&self.tls(), token)
            .await
            .expect("connect over TLS")
    }

    async fn events(&self, role: &str) -> EventServiceClient<Conn> {
        EventServiceClient::new(self.conn(Some(&self.tokens[role])).await)
    }

    async fn admin(&self, role: &str) -> AdminServiceClient<Conn> {
        AdminServiceClient::new(self.conn(Some(&self.tokens[role])).await)
    }

    /// Ready once the admin's ClusterStatus answers (the HTTP port speaks TLS too).
    async fn wait_ready(&self) {
        let until = Instant::now() + common::START_DEADLINE;
        loop {
            if let Ok(conn) = self.conn_with(&self.tls(), Some(&token_of("admin"))).await {
                let mut admin = AdminServiceClient::new(conn);
                if let Ok(s) = admin.cluster_status(ClusterStatusRequest {}).await {
                    let s = s.into_inner();
                    if !s.partitions.is_empty() && s.partitions.iter().all(|p| p.leader.is_some()) {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < until,
                "secured server not ready; log:\n{}",
                self.server.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.root.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
            .collect()
    }

    /// `curl` against the HTTPS port: (status code, body).
    fn curl(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let ca = self.root.join("certs/ca.pem");
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-w", "\n%{http_code}", "--cacert"])
            .arg(&ca)
            .args([
                "--resolve",
                &format!("localhost:{}:127.0.0.1", port(&self.server.http)),
            ]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("authorization: Bearer {t}")]);
        }
        let out = cmd
            .arg(format!(
                "https://localhost:{}{path}",
                port(&self.server.http)
            ))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

fn port(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(_, p)| p).unwrap_or(addr)
}

fn event(topic: &str, id: &str) -> Event {
    Event {
        message_id: id.into(),
        topic: topic.into(),
        payload: b"p".to_vec().into(),
        ..Default::default()
    }
}

/// What one call returned, reduced to whether the guard let it through.
fn verdict<T>(r: Result<T, tonic::Status>) -> Result<(), tonic::Status> {
    match r {
        Err(s) if matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated) => Err(s),
        _ => Ok(()),
    }
}

/// Runs operation `op` as `role`.
async fn call(s: &Secured, role: &str, op: &str) -> Result<(), tonic::Status> {
    let mut ev = s.events(role).await;
    let mut ad = s.admin(role).await;
    let sub = |topic: &str, group: &str| SubscribeRequest {
        consumer_group: group.into(),
        topic: topic.into(),
        ..Default::default()
    };
    let group_req = |group: &str| (group.to_string(), "orders.new".to_string());
    match op {
        "publish orders.new" => verdict(
            ev.publish(PublishRequest {
                event: Some(event("orders.new", &format!("{role}-1"))),
                reschedule: false,
            })
            .await,
        ),
        "publish billing" => verdict(
            ev.publish(PublishRequest {
                event: Some(event("billing", &format!("{role}-2"))),
                reschedule: false,
            })
            .await,
        ),
        "cancel orders.new" => verdict(
            ev.cancel(CancelRequest {
                topic: "orders.new".into(),
                message_id: "nope".into(),
                key: String::new(),
            })
            .await,
        ),
        "cancel billing" => verdict(
            ev.cancel(CancelRequest {
                topic: "billing".into(),
                message_id: "nope".into(),
                key: String::new(),
            })
            .await,
        ),
        "replay orders.new" | "replay billing" => {
            let topic = op.trim_start_matches("replay ");
            let opened = ev
                .replay(ReplayRequest {
                    topic: topic.into(),
                    ..Default::default()
                })
                .await;
            match opened {
                Err(e) => verdict::<()>(Err(e)),
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    verdict(stream.message().await)
                }
            }
        }
        "subscribe orders-g" | "subscribe billing-g" => {
            let group = op.trim_start_matches("subscribe ");
            let mut req = tonic::Request::new(sub("orders.new", group));
            req.set_timeout(Duration::from_secs(5));
            verdict(ev.subscribe(req).await)
        }
        "seek orders-g" | "seek billing-g" => {
            let (group, topic) = group_req(op.trim_start_matches("seek "));
            verdict(
                ad.seek_group(SeekGroupRequest {
                    consumer_group: group,
                    topic,
                    ts: 0,
                })
                .await,
            )
        }
        "redrive orders-g" => {
            let (group, topic) = group_req("orders-g");
            verdict(
                ad.redrive_dead_letters(RedriveDeadLettersRequest {
                    consumer_group: group,
                    topic,
                    message_ids: vec![],
                })
                .await,
            )
        }
        "dead letters orders-g" => {
            let (group, topic) = group_req("orders-g");
            verdict(
                ad.list_dead_letters(ListDeadLettersRequest {
                    consumer_group: group,
                    topic,
                    limit: 0,
                })
                .await,
            )
        }
        "list topics" => verdict(ad.list_topics(ListTopicsRequest {}).await),
        "status" => verdict(ad.cluster_status(ClusterStatusRequest {}).await),
        "rebalance" => verdict(ad.rebalance(RebalanceRequest {}).await),
        "remove node" => verdict(ad.remove_node(RemoveNodeRequest { node_id: 1 }).await),
        other => panic!("unknown operation {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_allow_and_deny_as_the_table_says() {
    let s = start().await;
    // (operation, [admin, producer, consumer, viewer]): the README's table.
    let table: [(&str, [bool; 4]); 17] = [
        ("publish orders.new", [true, true, false, false]),
        ("publish billing", [true, false, false, false]),
        ("cancel orders.new", [true, true, false, false]),
        ("cancel billing", [true, false, false, false]),
        ("replay orders.new", [true, true, true, false]),
        ("replay billing", [true, false, false, false]),
        ("subscribe orders-g", [true, false, true, false]),
        ("subscribe billing-g", [true, false, false, false]),
        ("seek orders-g", [true, false, true, false]),
        ("seek billing-g", [true, false, false, false]),
        ("redrive orders-g", [true, false, true, false]),
        ("dead letters orders-g", [true, false, true, true]),
        ("list topics", [true, true, true, true]),
        ("status", [true, true, true, true]),
        ("rebalance", [true, false, false, false]),
        ("remove node", [true, false, false, false]),
        ("publish orders.new", [true, true, false, false]),
    ];
    let mut wrong = Vec::new();
    for (op, allowed) in table {
        for (role, want) in ["admin", "producer", "consumer", "viewer"]
            .iter()
            .zip(allowed)
        {
            let got = call(&s, role, op).await;
            match (&got, want) {
                (Ok(()), true) => {}
                (Err(status), false) => {
                    if status.code() != Code::PermissionDenied
                        || !status.message().contains("may not")
                    {
                        wrong.push(format!("{role} {op}: {status:?}"));
                    }
                }
                _ => wrong.push(format!("{role} {op}: want allowed={want}, got {got:?}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // Every denial was audited, with the principal and the action.
    let audit = s.audit_lines();
    let denied: Vec<_> = audit.iter().filter(|l| l["result"] == "denied").collect();
    assert!(
        denied
            .iter()
            .any(|l| l["principal"] == "orders-producer" && l["action"] == "publish"),
        "{audit:#?}"
    );
    assert!(
        audit.iter().any(|l| l["principal"] == "root"
            && l["action"] == "seek_group"
            && l["result"] != "denied"),
        "{audit:#?}"
    );
    for line in &audit {
        for field in ["time", "principal", "action", "target", "result"] {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_required_and_never_echoed() {
    let s = start().await;
    // Plaintext to the TLS port: no answer.
    let plain = Endpoint::from_shared(format!("http://{}", s.server.grpc)).unwrap();
    if let Ok(channel) = plain.connect().await {
        let err = AdminServiceClient::new(channel)
            .cluster_status(ClusterStatusRequest {})
            .await
            .unwrap_err();
        assert_ne!(err.code(), Code::Ok);
    }
    // A client that trusts another CA refuses the server.
    let other = TestCa::new("another CA");
    let stranger = Tls {
        ca_pem: other.cert_pem().into_bytes(),
        identity: None,
        domain: Some("localhost".into()),
    };
    assert!(
        s.conn_with(&stranger, None).await.is_err() || {
            let mut a = AdminServiceClient::new(s.conn_with(&stranger, None).await.unwrap());
            a.cluster_status(ClusterStatusRequest {}).await.is_err()
        }
    );

    let mut nobody = AdminServiceClient::new(s.conn(None).await);
    let err = nobody
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let secret = "chr_wrong_secret_value";
    let mut wrong = AdminServiceClient::new(s.conn(Some(secret)).await);
    let err = wrong
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(!err.message().contains(secret), "{err:?}");

    // A client certificate stands for its principal: `ops` may look, not publish.
    let certs = s.root.join("certs");
    let with_cert = |stem: &str| Tls {
        identity: Some((
            std::fs::read(certs.join(format!("{stem}.crt"))).unwrap(),
            std::fs::read(certs.join(format!("{stem}.key"))).unwrap(),
        )),
        ..s.tls()
    };
    let mut ops = AdminServiceClient::new(s.conn_with(&with_cert("ops"), None).await.unwrap());
    ops.list_topics(ListTopicsRequest {})
        .await
        .expect("ops may list topics");
    let mut ops_events =
        EventServiceClient::new(s.conn_with(&with_cert("ops"), None).await.unwrap());
    let err = ops_events
        .publish(PublishRequest {
            event: Some(event("orders.new", "by-ops")),
            reschedule: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("\"ops\""), "{err:?}");
    let mut nobody =
        AdminServiceClient::new(s.conn_with(&with_cert("nobody"), None).await.unwrap());
    let err = nobody.list_topics(ListTopicsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // /health is open; /metrics wants a token; /ready is open by default.
    assert_eq!(s.curl("/health", None).0, 200);
    let (code, body) = s.curl("/metrics", None);
    assert_eq!(code, 401, "{body}");
    assert_eq!(s.curl("/metrics", Some(&token_of("viewer"))).0, 200);
    assert_eq!(s.curl("/ready", None).0, 200);
    let audit = std::fs::read_to_string(s.root.join("audit.log")).unwrap();
    assert!(!audit.contains(secret), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_rotate_and_certificates_reload_on_sighup() {
    let s = start().await;
    let mut consumer = s.events("consumer").await;
    let mut stream = consumer
        .subscribe(SubscribeRequest {
            consumer_group: "orders-live".into(),
            topic: "orders.new".into(),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();

    // A new server certificate from a new CA, and a new producer token.
    let ca2 = TestCa::new("chronos test CA 2");
    let certs = s.root.join("certs");
    ca2.issue(&["localhost", "127.0.0.1"])
        .write(&certs, "server")
        .unwrap();
    let new_token = "chr_rotated_producer_token";
    std::fs::write(s.root.join("principals.toml"), principals_file(new_token)).unwrap();
    s.server.signal("HUP");

    let tls2 = Tls {
        ca_pem: ca2.cert_pem().into_bytes(),
        identity: None,
        domain: Some("localhost".into()),
    };
    let until = Instant::now() + Duration::from_secs(20);
    let mut producer = loop {
        if let Ok(conn) = s.conn_with(&tls2, Some(new_token)).await {
            let mut p = EventServiceClient::new(conn);
            let published = p
                .publish(PublishRequest {
                    event: Some(event("orders.new", "after-reload")),
                    reschedule: false,
                })
                .await;
            if published.is_ok() {
                break p;
            }
        }
        assert!(
            Instant::now() < until,
            "the new certificate and token never took"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The old token is gone.
    let old = EventServiceClient::new(
        s.conn_with(&tls2, Some(&token_of("producer")))
            .await
            .unwrap(),
    )
    .publish(PublishRequest {
        event: Some(event("orders.new", "old-token")),
        reschedule: false,
    })
    .await
    .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated, "{old:?}");
    // The stream opened before the reload still delivers.
    producer
        .publish(PublishRequest {
            event: Some(event("orders.new", "second")),
            reschedule: false,
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let d = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a delivery on the old stream")
            .expect("stream open")
            .expect("not ended");
        seen.push(d.event.unwrap().message_id);
    }
    seen.sort();
    assert_eq!(seen, ["after-reload", "second"]);
    assert!(s
        .audit_lines()
        .iter()
        .any(|l| l["action"] == "reload_principals"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refuses_with_a_retry_after_and_recovers() {
    let s = start().await;
    let mut ev = s.events("limited").await;
    let mut refused = None;
    for i in 0..200 {
        let r = ev
            .publish(PublishRequest {
                event: Some(event("quota.x", &format!("q-{i}"))),
                reschedule: false,
            })
            .await;
        if let Err(status) = r {
            refused = Some((i, status));
            break;
        }
    }
    let (admitted, status) = refused.expect("20 events/s cannot admit 200 at once");
    assert!(admitted >= 20, "refused after only {admitted}");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("publish_events_per_sec"),
        "{status:?}"
    );
    let wait: u64 = status
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after-ms");
    assert!(wait <= 1_000, "retry after {wait} ms");
    tokio::time::sleep(Duration::from_millis(wait + 10)).await;
    ev.publish(PublishRequest {
        event: Some(event("quota.x", "after-wait")),
        reschedule: false,
    })
    .await
    .expect("admitted after the wait");
    // Another principal is not held back by this one's quota.
    s.events("producer")
        .await
        .publish(PublishRequest {
            event: Some(event("orders.new", "unrelated")),
            reschedule: false,
        })
        .await
        .expect("producer unaffected");
}

fn grpcurl() -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    for c in ["grpcurl".to_string(), format!("{home}/.local/bin/grpcurl")] {
        if Command::new(&c).arg("-version").output().is_ok() {
            return c;
        }
    }
    panic!("grpcurl not found: run `make deps`");
}

/// The README's secured grpcurl lines (`-cacert`), run as written from the
/// directory holding `certs/ca.pem`, with `CHRONOS_TOKEN` set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_secured_grpcurl_lines_run_verbatim() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let lines: Vec<&str> = readme
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("grpcurl -cacert"))
        .collect();
    assert!(lines.len() >= 2, "README has no secured grpcurl lines");
    let s = start().await;
    let bin = grpcurl();
    for line in lines {
        let cmd = line.replacen("grpcurl", &bin, 1).replace(
            "localhost:9000",
            &format!("localhost:{}", port(&s.server.grpc)),
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .current_dir(&s.root)
            .env("CHRONOS_TOKEN", token_of("admin"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{line}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Without the token the same call is refused.
    let out = Command::new(&bin)
        .args(["-cacert", "certs/ca.pem"])
        .arg(format!("localhost:{}", port(&s.server.grpc)))
        .arg("chronos.v1.AdminService/ListTopics")
        .current_dir(&s.root)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));
}
