//! A secured three-node cluster: mutual TLS between nodes (each node's
//! certificate names `node-<id>.chronos`), TLS for clients. Strangers get
//! nothing on the node-to-node port (another CA, an expired certificate, a
//! node of another cluster, a node not in the roster); the cluster survives
//! the kill -9 of a leader under load with every acknowledged event
//! delivered, none early. Every node's certificates rotate to a new CA on
//! SIGHUP, both the ones it serves with and the one it presents to peers.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use chronos_client::{Bearer, Client, ClientOptions, Conn, Error, EventBuilder, Tls};
use chronos_proto::v1::admin_service_client::AdminServiceClient;
use chronos_proto::v1::{ClusterStatusRequest, ClusterStatusResponse};
use chronos_tls::testing::{Issued, TestCa};
use common::cluster::{Cluster, Options};
use common::seen::{assert_none_early, collect_with, wait_all};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const NODES: u64 = 3;
const APP_TOKEN: &str = "chr_app_token_for_tests";
const OPS_TOKEN: &str = "chr_ops_token_for_tests";

fn write(issued: &Issued, dir: &Path, stem: &str) {
    issued.write(dir, stem).unwrap();
}

/// Certificates for every node, and the cluster config that uses them.
fn options(certs: &Path, ca: &TestCa) -> Options {
    std::fs::write(certs.join("ca.pem"), ca.cert_pem()).unwrap();
    for id in 1..=NODES {
        write(&ca.issue_node("chronos", id), certs, &format!("node-{id}"));
    }
    let file = |name: &str| certs.join(name).display().to_string();
    Options {
        nodes: NODES,
        partitions: 4,
        extra_toml: format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n\
             [audit]\npath = \"{}\"\n\
             [auth]\nenabled = true\n\
             [[auth.principals]]\nname = \"app\"\ntokens = [\"{}\"]\n\
             [[auth.principals.grants]]\nrole = \"producer\"\ntopics = [\"secure\"]\n\
             [[auth.principals.grants]]\nrole = \"consumer\"\ntopics = [\"secure\"]\ngroups = [\"g\"]\n\
             [[auth.principals]]\nname = \"ops\"\ntokens = [\"{}\"]\n\
             [[auth.principals.grants]]\nrole = \"admin\"\n",
            file("node-{node}.crt"),
            file("node-{node}.key"),
            file("audit-{node}.log"),
            chronos_access::hash_token(APP_TOKEN),
            chronos_access::hash_token(OPS_TOKEN),
        ),
        cluster_toml: format!(
            "[cluster.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            file("ca.pem"),
            file("node-{node}.crt"),
            file("node-{node}.key")
        ),
        ..Options::default()
    }
}

fn tls(ca: &TestCa) -> Tls {
    tls_trusting(ca.cert_pem())
}

fn tls_trusting(ca_pem: String) -> Tls {
    Tls {
        ca_pem: ca_pem.into_bytes(),
        identity: None,
        domain: Some("localhost".into()),
    }
}

async fn client(cluster: &Cluster, ca: &TestCa, nodes: &[u64]) -> Client {
    let endpoints: Vec<String> = nodes
        .iter()
        .map(|&n| format!("https://{}", cluster.api[n as usize - 1]))
        .collect();
    let options = ClientOptions {
        tls: Some(tls(ca)),
        token: Some(APP_TOKEN.into()),
        ..ClientOptions::default()
    };
    Client::connect_with(endpoints, options)
        .await
        .expect("connect over TLS")
}

/// Node `via`'s cluster status, asked over TLS trusting `ca_pem`.
async fn status(cluster: &Cluster, ca_pem: &str, via: u64) -> Option<ClusterStatusResponse> {
    let endpoint = Endpoint::from_shared(format!("https://{}", cluster.api[via as usize - 1]))
        .unwrap()
        .tls_config(tls_trusting(ca_pem.to_owned()).config())
        .unwrap();
    let channel = endpoint.connect().await.ok()?;
    let channel = Conn::new(channel, Bearer::new(Some(OPS_TOKEN)).unwrap());
    let s = AdminServiceClient::new(channel)
        .cluster_status(ClusterStatusRequest {})
        .await
        .ok()?;
    Some(s.into_inner())
}

/// Every partition has a leader, as node `via` sees it over TLS.
async fn wait_leaders(cluster: &Cluster, ca: &TestCa, via: u64) -> Vec<Option<u64>> {
    let until = Instant::now() + common::START_DEADLINE;
    loop {
        if let Some(s) = status(cluster, &ca.cert_pem(), via).await {
            let leaders: Vec<Option<u64>> = s.partitions.iter().map(|p| p.leader).collect();
            if leaders.len() == 4 && leaders.iter().all(Option::is_some) {
                return leaders;
            }
        }
        assert!(
            Instant::now() < until,
            "no leaders over TLS; node {via} log:\n{}",
            cluster.node(via).log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends every node a SIGHUP and waits until each logged its `n`th reload
/// of the certificates it presents to the other nodes.
fn reload_all(cluster: &Cluster, n: usize) {
    const RELOADED: &str = "cluster.tls client certificates reloaded";
    for id in 1..=NODES {
        cluster.node(id).signal("HUP");
    }
    let until = Instant::now() + Duration::from_secs(10);
    for id in 1..=NODES {
        while cluster.node(id).log().matches(RELOADED).count() < n {
            assert!(
                Instant::now() < until,
                "node {id} did not reload; log:\n{}",
                cluster.node(id).log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A node-to-node call to node 1 presenting `identity`, trusting `ca`.
async fn ask_node_1(
    cluster: &Cluster,
    ca: &TestCa,
    identity: Option<&Issued>,
) -> Result<(), String> {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.cert_pem()))
        .domain_name("node-1.chronos");
    if let Some(id) = identity {
        config = config.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    let endpoint = Endpoint::from_shared(format!("https://{}", cluster.raft_addr(1)))
        .unwrap()
        .tls_config(config)
        .unwrap()
        .connect_timeout(Duration::from_secs(3));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    chronos_raftnet::held(channel)
        .await
        .map(drop)
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secured_cluster_refuses_strangers_and_survives_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = TestCa::new("cluster CA");
    let mut cluster = Cluster::start_unready(dir.path(), options(&certs, &ca));
    wait_leaders(&cluster, &ca, 1).await;

    // Node to node: a node of this cluster gets an answer; strangers do not.
    ask_node_1(&cluster, &ca, Some(&ca.issue_node("chronos", 2)))
        .await
        .expect("node 2's certificate is a node's");
    let other_ca = TestCa::new("another CA");
    let strangers = [
        ("no certificate", None),
        ("another CA", Some(other_ca.issue_node("chronos", 2))),
        ("expired", Some(ca.issue_expired(&["node-2.chronos"]))),
        ("another cluster", Some(ca.issue_node("other", 2))),
        ("not in the roster", Some(ca.issue_node("chronos", 9))),
    ];
    for (what, identity) in &strangers {
        let got = ask_node_1(&cluster, &ca, identity.as_ref()).await;
        assert!(got.is_err(), "{what}: a stranger was answered");
    }
    // A plaintext client gets nothing from the node-to-node port either.
    let plain = Endpoint::from_shared(format!("http://{}", cluster.raft_addr(1))).unwrap();
    if let Ok(channel) = plain.connect().await {
        assert!(chronos_raftnet::held(channel).await.is_err());
    }

    // Under load, the leader of partition 0 is killed.
    let publisher = client(&cluster, &ca, &[1, 2, 3]).await;
    let consumer = client(&cluster, &ca, &[2, 3, 1]).await;
    let (seen, consuming) = collect_with(&consumer, "g", "secure", 100).await;
    let mut acked = BTreeMap::new();
    let leaders = wait_leaders(&cluster, &ca, 2).await;
    let victim = leaders[0].expect("partition 0 has a leader");
    for i in 0..300u64 {
        if i == 100 {
            cluster.kill9(victim);
        }
        let id = format!("e-{i}");
        let due = SystemTime::now() + Duration::from_millis((i % 10) * 100);
        let published = publisher
            .publish(EventBuilder::new("secure", &id).due_at(due).build())
            .await
            .unwrap_or_else(|e| panic!("publish {id}: {e}"));
        acked.insert(id, published.due_ts);
    }
    // A publish the edge denies never reaches the leader: the node the
    // client talks to refuses it, names the principal, and audits it.
    let edge = (1..=NODES).find(|&n| n != victim).unwrap();
    let other_leader = leaders
        .iter()
        .flatten()
        .copied()
        .find(|&l| l != edge && l != victim);
    let at_edge = client(&cluster, &ca, &[edge]).await;
    let denied = at_edge
        .publish(EventBuilder::new("elsewhere", "nope").build())
        .await
        .unwrap_err();
    assert!(
        matches!(&denied, Error::PermissionDenied { message } if message.contains("\"app\"")),
        "{denied:?}"
    );
    let audit = std::fs::read_to_string(certs.join(format!("audit-{edge}.log"))).unwrap();
    assert!(
        audit.contains("\"principal\":\"app\"") && audit.contains("\"result\":\"denied\""),
        "{audit}"
    );
    if let Some(l) = other_leader {
        let leader_audit =
            std::fs::read_to_string(certs.join(format!("audit-{l}.log"))).unwrap_or_default();
        assert!(
            !leader_audit.contains("elsewhere"),
            "checked again on node {l}: {leader_audit}"
        );
    }
    wait_all(&seen, &acked, Duration::from_secs(60), || {
        let alive = (1..=NODES).find(|&n| n != victim).unwrap();
        cluster.node(alive).log()
    })
    .await;
    assert_none_early(&seen, &acked);
    consuming.abort();
    cluster.restart(victim);
    wait_leaders(&cluster, &ca, victim).await;
}

/// Certificates rotate to a new CA without a restart: trust both CAs, then
/// new certificates, then trust only the new CA, each a file rewrite and a
/// SIGHUP. A node restarted afterwards (it knows only the new CA) is reached
/// again by every other node: they present their new certificates on new
/// connections, not the ones read at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_rotate_to_a_new_ca_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let old_ca = TestCa::new("old CA");
    let mut cluster = Cluster::start_unready(dir.path(), options(&certs, &old_ca));
    wait_leaders(&cluster, &old_ca, 1).await;

    let new_ca = TestCa::new("new CA");
    let both = format!("{}{}", old_ca.cert_pem(), new_ca.cert_pem());
    std::fs::write(certs.join("ca.pem"), &both).unwrap();
    reload_all(&cluster, 1);
    for id in 1..=NODES {
        write(
            &new_ca.issue_node("chronos", id),
            &certs,
            &format!("node-{id}"),
        );
    }
    reload_all(&cluster, 2);
    std::fs::write(certs.join("ca.pem"), new_ca.cert_pem()).unwrap();
    reload_all(&cluster, 3);

    // The old CA is no longer trusted by any listener.
    let refused = ask_node_1(&cluster, &new_ca, Some(&old_ca.issue_node("chronos", 2))).await;
    assert!(refused.is_err(), "an old-CA node certificate was answered");
    ask_node_1(&cluster, &new_ca, Some(&new_ca.issue_node("chronos", 2)))
        .await
        .expect("a new-CA node certificate is a node's");

    cluster.kill9(2);
    cluster.restart(2);
    let until = Instant::now() + Duration::from_secs(30);
    for via in [1, 3] {
        loop {
            let reaches_2 = status(&cluster, &new_ca.cert_pem(), via)
                .await
                .is_some_and(|s| s.nodes.iter().any(|n| n.id == 2 && n.reachable));
            if reaches_2 {
                break;
            }
            assert!(
                Instant::now() < until,
                "node {via} cannot reach the restarted node 2; its log:\n{}\nnode 2's:\n{}",
                cluster.node(via).log(),
                cluster.node(2).log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    wait_leaders(&cluster, &new_ca, 2).await;
    let publisher = client(&cluster, &new_ca, &[2, 1, 3]).await;
    for i in 0..20 {
        publisher
            .publish(EventBuilder::new("secure", format!("rotated-{i}")).build())
            .await
            .unwrap_or_else(|e| panic!("publish rotated-{i}: {e}"));
    }
}
