//! A cluster of real `chronos serve` processes on 127.0.0.x loopback addresses.
//!
//! Every node gets its own config file listing all nodes. With `proxied`, each
//! node reaches every other node's raft_addr through its own TCP proxy (one per
//! directed link), so a test can cut a node off the others and heal it. Raft
//! membership carries no addresses, so nodes may list different addresses for
//! the same peer.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chronos_proto::v1::admin_service_client::AdminServiceClient;
use chronos_proto::v1::{
    ClusterStatusRequest, ClusterStatusResponse, ListPartitionsRequest, PartitionInfo,
};

use super::{Server, START_DEADLINE};

/// How a test cluster is set up.
#[derive(Clone)]
pub struct Options {
    pub nodes: u64,
    pub partitions: u32,
    pub replication_factor: u32,
    /// Route node-to-node traffic through cuttable proxies.
    pub proxied: bool,
    /// Appended to every node's config file (e.g. `[raft]` settings);
    /// `{node}` stands for the node's id.
    pub extra_toml: String,
    /// Appended to every node's `[cluster]` section; `{node}` as above.
    pub cluster_toml: String,
    /// Extra environment of some nodes' processes, by node id.
    pub env: BTreeMap<u64, Vec<(String, String)>>,
    /// Nodes that join later (`cluster.join`): only their own config lists
    /// them; the others form the cluster without them.
    pub joiners: Vec<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 3,
            partitions: 4,
            replication_factor: 3,
            proxied: false,
            extra_toml: String::new(),
            cluster_toml: String::new(),
            env: BTreeMap::new(),
            joiners: Vec::new(),
        }
    }
}

pub struct Cluster {
    pub opts: Options,
    root: PathBuf,
    /// Index i holds node id i + 1; `None` while stopped.
    servers: Vec<Option<Server>>,
    pub api: Vec<String>,
    raft: Vec<String>,
    /// (from, to) → the proxy `from` dials to reach `to`.
    links: BTreeMap<(u64, u64), LinkProxy>,
}

/// Two distinct free ports on `ip` right now (both bound before either is
/// released, so the kernel cannot hand out the same one twice; the node
/// binds them soon after).
fn free_ports(ip: &str) -> (u16, u16) {
    let a = TcpListener::bind((ip, 0)).unwrap();
    let b = TcpListener::bind((ip, 0)).unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

fn ip_of(node: u64) -> String {
    format!("127.0.0.{}", 10 + node)
}

impl Cluster {
    /// Starts every node and waits until each is ready (all partitions have leaders).
    pub fn start(root: &Path, opts: Options) -> Cluster {
        let cluster = Cluster::start_unready(root, opts);
        cluster.wait_ready_all();
        cluster
    }

    /// Starts every node without waiting for `/ready`.
    pub fn start_unready(root: &Path, opts: Options) -> Cluster {
        let all: Vec<u64> = (1..=opts.nodes).collect();
        Cluster::start_only(root, opts, &all)
    }

    /// Starts only the nodes `ids` (the others stay stopped; `restart` starts
    /// them) without waiting for `/ready`.
    pub fn start_only(root: &Path, opts: Options, ids: &[u64]) -> Cluster {
        let n = opts.nodes;
        // A node's two ports share its address: taken together, never equal.
        let (api, raft): (Vec<String>, Vec<String>) = (1..=n)
            .map(|i| {
                let (api, raft) = free_ports(&ip_of(i));
                (
                    format!("{}:{api}", ip_of(i)),
                    format!("{}:{raft}", ip_of(i)),
                )
            })
            .unzip();
        let mut links = BTreeMap::new();
        if opts.proxied {
            for from in 1..=n {
                for to in 1..=n {
                    if from != to {
                        links.insert((from, to), LinkProxy::start(&raft[to as usize - 1]));
                    }
                }
            }
        }
        let mut cluster = Cluster {
            opts,
            root: root.to_path_buf(),
            servers: (0..n).map(|_| None).collect(),
            api,
            raft,
            links,
        };
        for id in 1..=n {
            cluster.write_config(id);
        }
        for &id in ids {
            cluster.spawn(id);
        }
        cluster
    }

    fn config_path(&self, id: u64) -> PathBuf {
        self.root.join(format!("node{id}.toml"))
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.root.join(format!("node{id}"))
    }

    /// Node `id`'s node-to-node address.
    pub fn raft_addr(&self, id: u64) -> String {
        self.raft[id as usize - 1].clone()
    }

    fn write_config(&self, id: u64) {
        let joins = self.opts.joiners.contains(&id);
        let mut text = format!(
            "node_id = {id}\npartitions = {}\n{}\n[cluster]\nallow_plaintext = true\nreplication_factor = {}\njoin = {joins}\n{}\n",
            self.opts.partitions,
            self.opts.extra_toml.replace("{node}", &id.to_string()),
            self.opts.replication_factor,
            self.opts.cluster_toml.replace("{node}", &id.to_string())
        );
        let listed = (1..=self.opts.nodes).filter(|&p| p == id || !self.opts.joiners.contains(&p));
        for peer in listed {
            let raft = match self.links.get(&(id, peer)) {
                Some(proxy) => proxy.addr.clone(),
                None => self.raft[peer as usize - 1].clone(),
            };
            text.push_str(&format!(
                "[[cluster.nodes]]\nid = {peer}\nraft_addr = \"{raft}\"\napi_addr = \"{}\"\n",
                self.api[peer as usize - 1]
            ));
        }
        std::fs::write(self.config_path(id), text).unwrap();
    }

    fn spawn(&mut self, id: u64) {
        let config = self.config_path(id);
        let env: Vec<(&str, &str)> = self
            .opts
            .env
            .get(&id)
            .map(|vars| vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
            .unwrap_or_default();
        let server = Server::spawn(
            &self.data_dir(id),
            &["--config", config.to_str().unwrap()],
            &env,
        );
        self.servers[id as usize - 1] = Some(server);
    }

    pub fn wait_ready_all(&self) {
        for s in self.servers.iter().flatten() {
            s.wait_ready(START_DEADLINE);
        }
    }

    pub fn node(&self, id: u64) -> &Server {
        self.servers[id as usize - 1]
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is stopped"))
    }

    pub fn endpoint(&self, id: u64) -> String {
        format!("http://{}", self.api[id as usize - 1])
    }

    pub fn running(&self) -> Vec<u64> {
        (1..=self.opts.nodes)
            .filter(|&id| self.servers[id as usize - 1].is_some())
            .collect()
    }

    pub fn kill9(&mut self, id: u64) {
        if let Some(mut s) = self.servers[id as usize - 1].take() {
            s.kill9();
        }
    }

    /// Stops node `id` with SIGTERM, as an operator does, and waits for it
    /// to exit (it must within `deadline`).
    pub fn terminate(&mut self, id: u64, deadline: Duration) -> std::process::ExitStatus {
        let mut s = self.servers[id as usize - 1]
            .take()
            .unwrap_or_else(|| panic!("node {id} is stopped"));
        let status = s.terminate(deadline);
        for line in s.log().lines().filter(|l| l.contains("stopping")) {
            eprintln!("node {id}: {line}");
        }
        status
    }

    /// Starts a stopped node again on its data directory (not waiting for ready).
    pub fn restart(&mut self, id: u64) {
        assert!(self.servers[id as usize - 1].is_none(), "node {id} runs");
        self.spawn(id);
    }

    /// Deletes a stopped node's data directory.
    pub fn wipe(&self, id: u64) {
        assert!(self.servers[id as usize - 1].is_none(), "node {id} runs");
        let _ = std::fs::remove_dir_all(self.data_dir(id));
    }

    /// Cuts every link to and from `id` (existing connections are reset).
    pub fn isolate(&self, id: u64) {
        for ((from, to), proxy) in &self.links {
            if *from == id || *to == id {
                proxy.cut();
            }
        }
    }

    pub fn heal(&self) {
        for proxy in self.links.values() {
            proxy.heal();
        }
    }

    /// Moves the leadership of `partition` to node `to`: kills whichever other
    /// node leads it, lets the group elect, restarts the killed node; repeats.
    pub async fn make_leader(&mut self, to: u64, partition: u32) {
        let all: Vec<u64> = (1..=self.opts.nodes).collect();
        let mut rounds = 0;
        loop {
            let leader = self
                .leader_of(to, partition, &all, Duration::from_secs(15))
                .await;
            if leader == to {
                return;
            }
            rounds += 1;
            assert!(
                rounds <= 10,
                "node {to} never became leader of partition {partition}"
            );
            self.kill9(leader);
            let others: Vec<u64> = all.iter().copied().filter(|&n| n != leader).collect();
            self.leader_of(to, partition, &others, Duration::from_secs(15))
                .await;
            self.restart(leader);
            self.node(leader).wait_ready(START_DEADLINE);
        }
    }

    pub fn log(&self, id: u64) -> String {
        self.servers[id as usize - 1]
            .as_ref()
            .map(Server::log)
            .unwrap_or_default()
    }

    pub async fn admin(&self, id: u64) -> AdminServiceClient<tonic::transport::Channel> {
        AdminServiceClient::connect(self.endpoint(id))
            .await
            .unwrap()
    }

    pub async fn status(&self, via: u64) -> ClusterStatusResponse {
        self.admin(via)
            .await
            .cluster_status(ClusterStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// The leader of `partition` as node `via` reports it, waiting (until
    /// `deadline`) for one that is among `allowed`.
    pub async fn leader_of(
        &self,
        via: u64,
        partition: u32,
        allowed: &[u64],
        deadline: Duration,
    ) -> u64 {
        let until = Instant::now() + deadline;
        loop {
            let status = self.status(via).await;
            let leader = status
                .partitions
                .iter()
                .find(|p| p.partition == partition)
                .and_then(|p| p.leader);
            if let Some(l) = leader.filter(|l| allowed.contains(l)) {
                return l;
            }
            assert!(
                Instant::now() < until,
                "partition {partition}: no leader among {allowed:?} within {deadline:?} (last {leader:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A TCP proxy for one directed node-to-node link that a test can cut.
pub struct LinkProxy {
    pub addr: String,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl LinkProxy {
    pub fn start(target: &str) -> LinkProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let target = target.to_string();
        let (c, o, st) = (cut.clone(), open.clone(), stop.clone());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !st.load(Ordering::Acquire) {
                let inbound = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                if c.load(Ordering::Acquire) {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                }
                let _ = inbound.set_nonblocking(false);
                let Ok(outbound) =
                    TcpStream::connect_timeout(&target.parse().unwrap(), Duration::from_secs(1))
                else {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                {
                    let mut open = o.lock().unwrap();
                    open.push(inbound.try_clone().unwrap());
                    open.push(outbound.try_clone().unwrap());
                }
                pipe(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                pipe(outbound, inbound);
            }
        });
        LinkProxy {
            addr,
            cut,
            open,
            stop,
        }
    }

    /// Resets open connections and refuses new ones until `heal`.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::Release);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.cut();
    }
}

/// Copies `from` into `to` on a thread until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// Node `id`'s own view of the partitions it holds.
pub async fn local_view(cluster: &Cluster, id: u64) -> Vec<PartitionInfo> {
    let all: Vec<String> = (0..cluster.opts.partitions)
        .map(|p| p.to_string())
        .collect();
    let mut req = tonic::Request::new(ListPartitionsRequest {});
    req.metadata_mut()
        .insert("chronos-scope", all.join(",").parse().unwrap());
    cluster
        .admin(id)
        .await
        .list_partitions(req)
        .await
        .expect("list partitions")
        .into_inner()
        .partitions
}

/// Waits until node `id` has applied as much of every partition as the leader
/// reports (same next offset and pending count).
pub async fn wait_caught_up(cluster: &Cluster, id: u64, via: u64, deadline: Duration) {
    let until = Instant::now() + deadline;
    loop {
        let leaders = cluster.status(via).await.partitions;
        let mine = local_view(cluster, id).await;
        let behind: Vec<String> = leaders
            .iter()
            .filter_map(|l| {
                let m = mine.iter().find(|m| m.partition == l.partition);
                let ok = m.is_some_and(|m| {
                    m.next_offset == l.next_offset && m.pending == l.pending && l.leader.is_some()
                });
                (!ok).then(|| {
                    format!(
                        "p{} leader {:?}/{} mine {:?}",
                        l.partition,
                        l.next_offset,
                        l.pending,
                        m.map(|m| (m.next_offset, m.pending, m.applied_index))
                    )
                })
            })
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < until,
            "node {id} did not catch up within {deadline:?}: {behind:?}\n{}",
            cluster.log(id)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kills node `id`, wipes its data, restarts it and waits until it has caught
/// up with node 1; returns how many snapshots it installed on the way.
pub async fn wipe_and_rejoin(cluster: &mut Cluster, id: u64) -> f64 {
    cluster.kill9(id);
    cluster.wipe(id);
    cluster.restart(id);
    cluster.node(id).wait_ready(START_DEADLINE);
    wait_caught_up(cluster, id, 1, Duration::from_secs(60)).await;
    cluster.node(id).metric("chronos_snapshots_installed_total")
}
