//! `status`, `groups`, `dlq`, `cluster`.

use chronos_proto::v1::{
    AddNodeRequest, ClusterStatusRequest, DeleteGroupRequest, DescribeGroupRequest, GroupInfo,
    ListDeadLettersRequest, ListGroupsRequest, NodeInfo, RebalanceRequest,
    RedriveDeadLettersRequest, RemoveNodeRequest, SeekGroupRequest,
};
use clap::Subcommand;
use serde_json::json;

use super::output::{event_json, payload_text, print_json};
use super::{admin_client, fmt_time, parse_time, Conn, Result};

#[derive(Subcommand, Debug)]
pub enum GroupsCommand {
    /// Every consumer group (of one topic with --topic).
    List {
        #[arg(long)]
        topic: Option<String>,
    },
    /// One group: members, in flight, lag, next due, dead letters.
    Describe { topic: String, group: String },
    /// Move a group so that events due at or after a time are delivered (again).
    Seek {
        topic: String,
        group: String,
        /// RFC 3339, ms since the epoch, or now.
        #[arg(long)]
        to: String,
    },
    /// Remove a group with its in-flight events and dead letters; refused
    /// while a member is subscribed. The topic's events stay.
    Delete { topic: String, group: String },
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// A group's dead letters, oldest first.
    List {
        topic: String,
        group: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Put dead letters back, due now, for this group (all, or --id ones).
    Redrive {
        topic: String,
        group: String,
        /// Only this message id; repeatable.
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Hand each partition to its preferred leader now (leaders spread
    /// evenly), where that node has caught up; one handoff per node at a time.
    Rebalance,
    /// Add a node to the cluster: start it first with `cluster.join = true`;
    /// partitions then move onto it a few at a time (`chronos status` shows
    /// the moves).
    AddNode {
        /// The new node's id (its `node_id`).
        #[arg(long)]
        id: u64,
        /// Where the other nodes reach it (Raft and forwarded requests), host:port.
        #[arg(long)]
        raft_addr: String,
        /// Its public gRPC address, host:port.
        #[arg(long)]
        api_addr: String,
    },
    /// Remove a node: its replicas move to the other nodes, then it leaves
    /// the cluster (`chronos status` shows when; then stop it). Refused when
    /// the nodes left could not hold replication_factor copies.
    RemoveNode {
        #[arg(long)]
        id: u64,
    },
}

fn print_roster(conn: &Conn, what: &str, nodes: &[NodeInfo], version: u64) {
    if conn.json {
        let nodes: Vec<_> = nodes
            .iter()
            .map(|n| json!({"id": n.id, "api_addr": n.api_addr, "raft_addr": n.raft_addr, "state": n.state}))
            .collect();
        print_json(&json!({ "roster_version": version, "nodes": nodes }));
        return;
    }
    println!("{what}; the roster (version {version}):");
    for n in nodes {
        println!(
            "  node {}  api {}  raft {}  {}",
            n.id, n.api_addr, n.raft_addr, n.state
        );
    }
}

pub async fn cluster(conn: &Conn, cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Rebalance => {
            let mut admin = admin_client(conn).await?;
            let nodes = admin
                .rebalance(RebalanceRequest {})
                .await?
                .into_inner()
                .nodes;
            if conn.json {
                print_json(&json!({ "nodes": nodes }));
            } else {
                let list: Vec<String> = nodes.iter().map(u64::to_string).collect();
                println!(
                    "asked node(s) {} to hand partitions to their preferred leaders; `chronos status` shows leaders per node",
                    list.join(", ")
                );
            }
            Ok(())
        }
        ClusterCommand::AddNode {
            id,
            raft_addr,
            api_addr,
        } => {
            let mut admin = admin_client(conn).await?;
            let r = admin
                .add_node(AddNodeRequest {
                    node_id: id,
                    raft_addr,
                    api_addr,
                })
                .await?
                .into_inner();
            print_roster(
                conn,
                &format!("node {id} is in the cluster"),
                &r.nodes,
                r.roster_version,
            );
            Ok(())
        }
        ClusterCommand::RemoveNode { id } => {
            let mut admin = admin_client(conn).await?;
            let r = admin
                .remove_node(RemoveNodeRequest { node_id: id })
                .await?
                .into_inner();
            let what = if r.nodes.iter().any(|n| n.id == id) {
                format!("node {id} is leaving: its replicas move to the other nodes")
            } else {
                format!("node {id} has left the cluster")
            };
            print_roster(conn, &what, &r.nodes, r.roster_version);
            Ok(())
        }
    }
}

pub async fn status(conn: &Conn) -> Result<()> {
    let mut admin = admin_client(conn).await?;
    let s = admin
        .cluster_status(ClusterStatusRequest {})
        .await?
        .into_inner();
    if conn.json {
        let partitions: Vec<_> = s
            .partitions
            .iter()
            .map(|p| {
                json!({
                    "partition": p.partition, "leader": p.leader, "term": p.term,
                    "voters": p.voters, "last_log_index": p.last_log_index,
                    "commit_index": p.commit_index, "applied_index": p.applied_index,
                    "next_offset": p.next_offset, "pending": p.pending,
                    "next_due_ts": p.next_due_ts, "wal_bytes": p.wal_bytes,
                    "wal_segments": p.wal_segments, "learners": p.learners,
                    "replicas": p.replicas.iter().map(|r| json!({
                        "node_id": r.node_id, "matched_index": r.matched_index, "lag": r.lag,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let nodes: Vec<_> = s
            .nodes
            .iter()
            .map(|n| {
                json!({"id": n.id, "api_addr": n.api_addr, "raft_addr": n.raft_addr,
                       "reachable": n.reachable, "clock_offset_ms": n.clock_offset_ms,
                       "state": n.state})
            })
            .collect();
        print_json(&json!({
            "node_id": s.node_id, "replication_factor": s.replication_factor,
            "clock_within_bounds": s.clock_within_bounds,
            "max_clock_offset_ms": s.max_clock_offset_ms,
            "nodes": nodes, "partitions": partitions, "roster_version": s.roster_version,
            "moves": s.moves.iter().map(|m| json!({
                "partition": m.partition, "voters": m.voters, "target": m.target,
                "step": m.step,
                "learners": m.learners.iter().map(|r| json!({
                    "node_id": r.node_id, "matched_index": r.matched_index, "lag": r.lag,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!(
        "node {} (replication factor {}), {} node(s):",
        s.node_id,
        s.replication_factor,
        s.nodes.len()
    );
    if !s.clock_within_bounds {
        println!(
            "  CLOCK: node {}'s clock is not within {} ms of a majority of the nodes: it leads and fires nothing",
            s.node_id, s.max_clock_offset_ms
        );
    }
    for n in &s.nodes {
        let raft = if n.raft_addr.is_empty() {
            String::new()
        } else {
            format!("  raft {}", n.raft_addr)
        };
        let down = if n.reachable { "" } else { "  UNREACHABLE" };
        let leaving = if n.state == "leaving" {
            "  LEAVING"
        } else {
            ""
        };
        let clock = match n.clock_offset_ms {
            Some(_) if n.id == s.node_id => String::new(),
            Some(ms) => format!("  clock {ms:+} ms"),
            None => "  clock not measured".to_string(),
        };
        let leads = s
            .partitions
            .iter()
            .filter(|p| p.leader == Some(n.id))
            .count();
        println!(
            "  node {}  api {}{raft}  leads {leads}{clock}{leaving}{down}",
            n.id, n.api_addr
        );
    }
    if !s.moves.is_empty() {
        println!("{} partition(s) moving:", s.moves.len());
        for m in &s.moves {
            let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            let learners: Vec<String> = m
                .learners
                .iter()
                .map(|r| format!("{} (lag {})", r.node_id, r.lag))
                .collect();
            println!(
                "  partition {}: voters {} -> {}; {}{}",
                m.partition,
                list(&m.voters),
                list(&m.target),
                m.step,
                if learners.is_empty() {
                    String::new()
                } else {
                    format!("; learners {}", learners.join(", "))
                }
            );
        }
    }
    println!(
        "{:>9} {:>7} {:>5} {:>8} {:>10} {:>10} {:>11} {:>10} {:>10}  {:<19} replica lag",
        "partition",
        "leader",
        "term",
        "voters",
        "last log",
        "applied",
        "next offset",
        "pending",
        "wal bytes",
        "next due"
    );
    for p in &s.partitions {
        let leader = p.leader.map_or("-".to_string(), |l| l.to_string());
        let voters: Vec<String> = p.voters.iter().map(u64::to_string).collect();
        let lag: Vec<String> = p
            .replicas
            .iter()
            .map(|r| format!("{}:{}", r.node_id, r.lag))
            .collect();
        println!(
            "{:>9} {:>7} {:>5} {:>8} {:>10} {:>10} {:>11} {:>10} {:>10}  {:<19} {}",
            p.partition,
            leader,
            p.term,
            voters.join(","),
            p.last_log_index,
            p.applied_index,
            p.next_offset,
            p.pending,
            p.wal_bytes,
            fmt_time(p.next_due_ts),
            if lag.is_empty() {
                "-".to_string()
            } else {
                lag.join(" ")
            }
        );
    }
    Ok(())
}

fn group_json(g: &GroupInfo) -> serde_json::Value {
    json!({
        "name": g.name, "topic": g.topic, "members": g.members, "inflight": g.inflight,
        "lag": g.lag, "next_due_ts": g.next_due_ts, "dead_letters": g.dead_letters,
    })
}

fn group_line(g: &GroupInfo) -> String {
    format!(
        "{}/{}: {} member(s), {} in flight, lag {}, next due {}, {} dead letter(s)",
        g.topic,
        g.name,
        g.members,
        g.inflight,
        g.lag,
        fmt_time(g.next_due_ts),
        g.dead_letters
    )
}

pub async fn groups(conn: &Conn, cmd: GroupsCommand) -> Result<()> {
    let mut admin = admin_client(conn).await?;
    match cmd {
        GroupsCommand::List { topic } => {
            let req = ListGroupsRequest {
                topic: topic.unwrap_or_default(),
            };
            let groups = admin.list_groups(req).await?.into_inner().groups;
            for g in &groups {
                if conn.json {
                    print_json(&group_json(g));
                } else {
                    println!("{}", group_line(g));
                }
            }
            if groups.is_empty() && !conn.json {
                println!("no consumer groups");
            }
        }
        GroupsCommand::Describe { topic, group } => {
            let req = DescribeGroupRequest {
                consumer_group: group,
                topic,
            };
            let g = admin.describe_group(req).await?.into_inner().group;
            let g = g.unwrap_or_default();
            if conn.json {
                print_json(&group_json(&g));
            } else {
                println!("{}", group_line(&g));
            }
        }
        GroupsCommand::Seek { topic, group, to } => {
            let ts = parse_time("--to", &to)?;
            let req = SeekGroupRequest {
                consumer_group: group.clone(),
                topic: topic.clone(),
                ts,
            };
            admin.seek_group(req).await?;
            if conn.json {
                print_json(&json!({"topic": topic, "group": group, "ts": ts}));
            } else {
                println!(
                    "{topic}/{group}: events due from {} will be delivered",
                    fmt_time(ts)
                );
            }
        }
        GroupsCommand::Delete { topic, group } => {
            let req = DeleteGroupRequest {
                consumer_group: group.clone(),
                topic: topic.clone(),
            };
            let dropped = admin.delete_group(req).await?.into_inner();
            if conn.json {
                print_json(&json!({
                    "topic": topic,
                    "group": group,
                    "in_flight": dropped.in_flight,
                    "dead_letters": dropped.dead_letters,
                }));
            } else {
                println!(
                    "{topic}/{group}: deleted, with {} event(s) in flight and {} dead letter(s)",
                    dropped.in_flight, dropped.dead_letters
                );
            }
        }
    }
    Ok(())
}

pub async fn dlq(conn: &Conn, cmd: DlqCommand) -> Result<()> {
    let mut admin = admin_client(conn).await?;
    match cmd {
        DlqCommand::List {
            topic,
            group,
            limit,
        } => {
            let req = ListDeadLettersRequest {
                consumer_group: group,
                topic,
                limit,
            };
            let dead = admin
                .list_dead_letters(req)
                .await?
                .into_inner()
                .dead_letters;
            for d in &dead {
                let e = d.event.clone().unwrap_or_default();
                if conn.json {
                    print_json(&json!({
                        "partition": d.partition, "offset": d.offset, "attempts": d.attempts,
                        "reason": d.reason, "dead_ts": d.dead_ts, "event": event_json(&e),
                    }));
                } else {
                    println!(
                        "{}  {}/{}  p{}@{}  {} attempt(s): {}  {}",
                        fmt_time(d.dead_ts),
                        e.topic,
                        e.message_id,
                        d.partition,
                        d.offset,
                        d.attempts,
                        d.reason,
                        payload_text(&e.payload)
                    );
                }
            }
            if dead.is_empty() && !conn.json {
                println!("no dead letters");
            }
        }
        DlqCommand::Redrive { topic, group, ids } => {
            let req = RedriveDeadLettersRequest {
                consumer_group: group.clone(),
                topic: topic.clone(),
                message_ids: ids,
            };
            let n = admin.redrive_dead_letters(req).await?.into_inner().redriven;
            if conn.json {
                print_json(&json!({"topic": topic, "group": group, "redriven": n}));
            } else {
                println!("{topic}/{group}: {n} dead letter(s) redriven, due now");
            }
        }
    }
    Ok(())
}
