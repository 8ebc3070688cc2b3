//! The roster: the cluster's node list, kept by a Raft group of every node
//! (the roster's Raft group) so that every node agrees on it. Placement is computed
//! over its active nodes. The rules for changing it live here; the roster
//! Raft group's leader applies them and proposes the result.

use chronos_proto::internal::{Roster, RosterNode};

/// The id of the roster's Raft group, beside the partitions' ids in the node's
/// Raft log and on the node-to-node wire.
pub const ROSTER_RAFT: u32 = u32::MAX;

/// Why a roster change is refused; each names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("node_id: node {0} is already in the cluster with other addresses")]
    AlreadyExists(u64),
    #[error("node_id: node {0} is not in the cluster")]
    NotFound(u64),
    /// The change would leave the cluster unable to hold its copies.
    #[error("{0}")]
    Refused(String),
}

/// The replication factor the roster keeps, or (a roster written before it
/// kept one) this node's configured one.
pub fn replication_factor(roster: &Roster, configured: u32) -> u32 {
    match roster.replication_factor {
        0 => configured,
        rf => rf,
    }
}

/// Ids of the nodes partitions are placed on (not leaving), ascending.
pub fn active(roster: &Roster) -> Vec<u64> {
    let mut ids: Vec<u64> = roster
        .nodes
        .iter()
        .filter(|n| !n.leaving)
        .map(|n| n.id)
        .collect();
    ids.sort_unstable();
    ids
}

fn check_addr(field: &'static str, addr: &str) -> Result<(), RosterError> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(RosterError::Invalid {
            field,
            message: format!("{addr:?} is not host:port"),
        })
    }
}

/// The node list with `node` added; the same list if it is already there
/// with the same addresses (adding is idempotent).
pub fn add(roster: &Roster, node: RosterNode) -> Result<Vec<RosterNode>, RosterError> {
    if node.id == 0 {
        return Err(RosterError::Invalid {
            field: "node_id",
            message: "must be 1 or more".into(),
        });
    }
    check_addr("raft_addr", &node.raft_addr)?;
    check_addr("api_addr", &node.api_addr)?;
    if node.raft_addr == node.api_addr {
        return Err(RosterError::Invalid {
            field: "api_addr",
            message: format!("{:?} is also the raft_addr", node.api_addr),
        });
    }
    if let Some(have) = roster.nodes.iter().find(|n| n.id == node.id) {
        if have.leaving {
            return Err(RosterError::Refused(format!(
                "node {} is leaving the cluster; add it again once it has left",
                node.id
            )));
        }
        if have.raft_addr == node.raft_addr && have.api_addr == node.api_addr {
            return Ok(roster.nodes.clone());
        }
        return Err(RosterError::AlreadyExists(node.id));
    }
    for other in &roster.nodes {
        for (field, addr) in [("raft_addr", &node.raft_addr), ("api_addr", &node.api_addr)] {
            if *addr == other.raft_addr || *addr == other.api_addr {
                return Err(RosterError::Invalid {
                    field,
                    message: format!("{addr:?} is already used by node {}", other.id),
                });
            }
        }
    }
    let mut nodes = roster.nodes.clone();
    nodes.push(RosterNode {
        leaving: false,
        ..node
    });
    nodes.sort_by_key(|n| n.id);
    Ok(nodes)
}

/// The node list with node `id` leaving: its replicas move to the others.
/// Refused when the nodes left could not hold `replication_factor` copies of
/// every partition (a single node's copies included: the last copy of a
/// partition never goes).
pub fn remove(
    roster: &Roster,
    id: u64,
    replication_factor: u32,
) -> Result<Vec<RosterNode>, RosterError> {
    let Some(node) = roster.nodes.iter().find(|n| n.id == id) else {
        return Err(RosterError::NotFound(id));
    };
    if node.leaving {
        return Ok(roster.nodes.clone());
    }
    let left = active(roster).len() - 1;
    if left == 0 {
        return Err(RosterError::Refused(format!(
            "node {id} is the last node: it holds the last copy of every partition"
        )));
    }
    if left < replication_factor as usize {
        return Err(RosterError::Refused(format!(
            "removing node {id} would leave {left} nodes for replication_factor \
             {replication_factor}: partitions would lose copies (add a node first)"
        )));
    }
    Ok(roster
        .nodes
        .iter()
        .map(|n| RosterNode {
            leaving: n.leaving || n.id == id,
            ..n.clone()
        })
        .collect())
}

/// The node list without node `id` (a leaving node that holds nothing now).
pub fn forget(roster: &Roster, id: u64) -> Vec<RosterNode> {
    roster
        .nodes
        .iter()
        .filter(|n| n.id != id)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64) -> RosterNode {
        RosterNode {
            id,
            raft_addr: format!("127.0.0.1:{}", 7000 + id),
            api_addr: format!("127.0.0.1:{}", 8000 + id),
            leaving: false,
        }
    }

    fn roster(ids: &[u64]) -> Roster {
        Roster {
            version: 1,
            nodes: ids.iter().map(|&i| node(i)).collect(),
            replication_factor: 3,
        }
    }

    #[test]
    fn the_roster_keeps_the_replication_factor_its_first_writer_set() {
        let r = roster(&[1, 2, 3]);
        assert_eq!(replication_factor(&r, 1), 3, "a node configured otherwise");
        let old = Roster {
            replication_factor: 0,
            ..r
        };
        assert_eq!(replication_factor(&old, 2), 2, "written before it kept one");
    }

    #[test]
    fn add_checks_every_field_and_is_idempotent() {
        let r = roster(&[1, 2, 3]);
        let grown = Roster {
            version: 2,
            nodes: add(&r, node(4)).expect("add 4"),
            ..r.clone()
        };
        assert_eq!(active(&grown), vec![1, 2, 3, 4]);
        assert_eq!(add(&r, node(2)).expect("again"), r.nodes, "same node again");
        let moved = RosterNode {
            raft_addr: "127.0.0.1:9999".into(),
            ..node(2)
        };
        assert_eq!(add(&r, moved), Err(RosterError::AlreadyExists(2)));
        let reused = RosterNode {
            api_addr: node(1).raft_addr,
            ..node(5)
        };
        let err = add(&r, reused).unwrap_err().to_string();
        assert!(
            err.starts_with("api_addr:") && err.contains("node 1"),
            "{err}"
        );
        for (bad, field) in [
            (RosterNode { id: 0, ..node(5) }, "node_id"),
            (
                RosterNode {
                    raft_addr: "nope".into(),
                    ..node(5)
                },
                "raft_addr",
            ),
            (
                RosterNode {
                    api_addr: "h:0".into(),
                    ..node(5)
                },
                "api_addr",
            ),
        ] {
            let err = add(&r, bad).unwrap_err().to_string();
            assert!(err.starts_with(field), "{field}: {err}");
        }
    }

    #[test]
    fn remove_keeps_enough_copies_and_forget_drops_the_node() {
        let r = roster(&[1, 2, 3, 4]);
        let shrunk = Roster {
            version: 2,
            nodes: remove(&r, 4, 3).expect("4 of 4 with rf 3"),
            ..r.clone()
        };
        assert_eq!(active(&shrunk), vec![1, 2, 3]);
        assert_eq!(
            shrunk.nodes.len(),
            4,
            "a leaving node stays until it holds nothing"
        );
        assert_eq!(remove(&shrunk, 4, 3).expect("again"), shrunk.nodes);
        let err = remove(&shrunk, 1, 3).unwrap_err().to_string();
        assert!(err.contains("replication_factor 3"), "{err}");
        assert_eq!(remove(&r, 9, 1), Err(RosterError::NotFound(9)));
        let err = remove(&roster(&[7]), 7, 1).unwrap_err().to_string();
        assert!(err.contains("last copy"), "{err}");
        assert!(matches!(
            add(&shrunk, node(4)),
            Err(RosterError::Refused(_))
        ));
        assert_eq!(
            active(&Roster {
                version: 3,
                nodes: forget(&shrunk, 4),
                ..r
            }),
            vec![1, 2, 3]
        );
    }
}
