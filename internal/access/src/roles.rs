//! What a principal may do: permissions, the four roles that bundle them,
//! grants of a role over topic and group patterns, and the rule that decides
//! whether a grant covers an action.
//!
//! **A `None` topic or group in an action means "all of them"**, never "none
//! of them": a grant covers it only with a pattern that matches every name
//! (`"*"`). The two exceptions, both deliberate:
//! - `Describe` with no topic (ListTopics, ClusterStatus, ListGroups over all
//!   topics) is allowed by any grant that includes `Describe`: every role can
//!   describe what it was granted, and the listing itself reveals only names.
//! - `Cluster` (rebalance, add/remove node, reading the audit) is allowed only
//!   by an `admin` grant whose topics include a universal pattern: an admin of
//!   `orders.*` administers those topics, not the nodes everyone shares.
//!
//! A group that an action does not name is not checked for permissions that
//! are not about groups (publish, cancel, replay, describe a topic); for the
//! group permissions (consume, seek, redrive, read dead letters) a missing
//! group means every group of the topic.

use std::fmt;
use std::str::FromStr;

use crate::config::QuotaConfig;
use crate::glob;

/// One kind of thing a request does; each API call checks exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Publish and PublishBatch.
    Publish,
    /// Cancel a scheduled event.
    Cancel,
    /// Replay: read stored events of a topic.
    Replay,
    /// Subscribe as a member of a consumer group, and ack inside the stream.
    Consume,
    /// Move a consumer group's position (SeekGroup).
    Seek,
    /// Remove a consumer group with its in-flight events and dead letters
    /// (DeleteGroup).
    DeleteGroup,
    /// Put dead letters back into delivery (RedriveDeadLetters).
    Redrive,
    /// ListDeadLetters.
    ReadDeadLetters,
    /// List topics, partitions and groups, cluster status, describe a group.
    Describe,
    /// Rebalance, add or remove a node, read the audit.
    Cluster,
}

impl Permission {
    pub const ALL: [Permission; 10] = [
        Permission::Publish,
        Permission::Cancel,
        Permission::Replay,
        Permission::Consume,
        Permission::Seek,
        Permission::DeleteGroup,
        Permission::Redrive,
        Permission::ReadDeadLetters,
        Permission::Describe,
        Permission::Cluster,
    ];

    /// A stable snake_case name, used as the audit line's `action` for denials.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Publish => "publish",
            Permission::Cancel => "cancel",
            Permission::Replay => "replay",
            Permission::Consume => "consume",
            Permission::Seek => "seek",
            Permission::DeleteGroup => "delete_group",
            Permission::Redrive => "redrive",
            Permission::ReadDeadLetters => "read_dead_letters",
            Permission::Describe => "describe",
            Permission::Cluster => "cluster",
        }
    }

    /// Whether the permission is exercised on a consumer group, so an action
    /// without a group means every group of the topic.
    pub fn is_about_groups(self) -> bool {
        matches!(
            self,
            Permission::Consume
                | Permission::Seek
                | Permission::DeleteGroup
                | Permission::Redrive
                | Permission::ReadDeadLetters
        )
    }

    /// The verb phrase of a denial: "may not {verb} {target}".
    pub(crate) fn verb(self) -> &'static str {
        match self {
            Permission::Publish => "publish to",
            Permission::Cancel => "cancel events of",
            Permission::Replay => "replay",
            Permission::Consume => "consume from",
            Permission::Seek => "seek",
            Permission::DeleteGroup => "delete",
            Permission::Redrive => "redrive the dead letters of",
            Permission::ReadDeadLetters => "read the dead letters of",
            Permission::Describe => "describe",
            Permission::Cluster => "run cluster operations",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A named bundle of permissions, as written in `grants[].role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Producer,
    Consumer,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Producer, Role::Consumer, Role::Viewer];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Producer => "producer",
            Role::Consumer => "consumer",
            Role::Viewer => "viewer",
        }
    }

    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Admin => &Permission::ALL,
            Role::Producer => &[Publish, Cancel, Replay, Describe],
            Role::Consumer => &[Consume, Seek, Redrive, ReadDeadLetters, Replay, Describe],
            Role::Viewer => &[Describe, ReadDeadLetters],
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A role name that is none of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected one of admin, producer, consumer, viewer)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// What a request asks to do, and to what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action<'a> {
    pub permission: Permission,
    /// `None`: every topic (a cluster-wide action such as ListTopics).
    pub topic: Option<&'a str>,
    /// `None`: no group is involved, or every group (see the module doc).
    pub group: Option<&'a str>,
}

impl<'a> Action<'a> {
    /// An action on the cluster as a whole (no topic, no group).
    pub fn cluster(permission: Permission) -> Action<'static> {
        Action {
            permission,
            topic: None,
            group: None,
        }
    }

    pub fn on_topic(permission: Permission, topic: &'a str) -> Action<'a> {
        Action {
            permission,
            topic: Some(topic),
            group: None,
        }
    }

    pub fn on_group(permission: Permission, topic: &'a str, group: &'a str) -> Action<'a> {
        Action {
            permission,
            topic: Some(topic),
            group: Some(group),
        }
    }
}

/// A role over the topics and groups its patterns match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    /// Glob patterns (see [`glob::matches`]); never empty once validated.
    pub topics: Vec<String>,
    pub groups: Vec<String>,
}

impl Grant {
    /// Everything, everywhere.
    pub fn admin_everywhere() -> Grant {
        Grant {
            role: Role::Admin,
            topics: vec!["*".into()],
            groups: vec!["*".into()],
        }
    }

    /// Whether this grant alone allows `action` (rules in the module doc).
    pub fn covers(&self, action: &Action<'_>) -> bool {
        let p = action.permission;
        if !self.role.allows(p) {
            return false;
        }
        if p == Permission::Cluster {
            return self.role == Role::Admin && self.topics.iter().any(|t| glob::is_universal(t));
        }
        let topic_ok = match action.topic {
            Some(topic) => self.topics.iter().any(|pat| glob::matches(pat, topic)),
            None if p == Permission::Describe => true,
            None => self.topics.iter().any(|pat| glob::is_universal(pat)),
        };
        let group_ok = match action.group {
            Some(group) => self.groups.iter().any(|pat| glob::matches(pat, group)),
            None if p.is_about_groups() => self.groups.iter().any(|pat| glob::is_universal(pat)),
            None => true,
        };
        topic_ok && group_ok
    }
}

/// Someone a request authenticated as: a name, what it may do, how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub grants: Vec<Grant>,
    pub quota: QuotaConfig,
}

impl Principal {
    /// Name of the principal every caller is while authentication is off.
    pub const ANONYMOUS: &'static str = "anonymous";

    /// The caller when authentication is off: may do anything, unlimited.
    pub fn anonymous_admin() -> Principal {
        Principal {
            name: Principal::ANONYMOUS.into(),
            grants: vec![Grant::admin_everywhere()],
            quota: QuotaConfig::default(),
        }
    }

    /// Whether any of the principal's grants covers `action`.
    pub fn may(&self, action: &Action<'_>) -> bool {
        self.grants.iter().any(|g| g.covers(action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;

    fn grant(role: Role, topics: &[&str], groups: &[&str]) -> Grant {
        Grant {
            role,
            topics: topics.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn roles_bundle_the_documented_permissions() {
        assert!(Permission::ALL.iter().all(|&p| Role::Admin.allows(p)));
        let producer: Vec<_> = Permission::ALL
            .into_iter()
            .filter(|&p| Role::Producer.allows(p))
            .collect();
        assert_eq!(producer, [Publish, Cancel, Replay, Describe]);
        assert!(Role::Consumer.allows(Consume) && !Role::Consumer.allows(Publish));
        assert!(!Role::Consumer.allows(Cluster) && !Role::Consumer.allows(Cancel));
        assert!(Role::Viewer.allows(ReadDeadLetters) && !Role::Viewer.allows(Redrive));
        assert_eq!("viewer".parse::<Role>(), Ok(Role::Viewer));
        let err = "root".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("\"root\"") && err.contains("admin, producer, consumer, viewer"));
    }

    #[test]
    fn topic_and_group_patterns() {
        let g = grant(Role::Consumer, &["orders.*"], &["orders-*"]);
        assert!(g.covers(&Action::on_group(Consume, "orders.new", "orders-billing")));
        assert!(!g.covers(&Action::on_group(Consume, "orders.new", "audit")));
        assert!(!g.covers(&Action::on_group(Consume, "billing", "orders-1")));
        assert!(g.covers(&Action::on_topic(Replay, "orders.new")));
        assert!(!g.covers(&Action::on_topic(Publish, "orders.new")));
        // Every group of a topic needs a universal group pattern.
        assert!(!g.covers(&Action::on_topic(ReadDeadLetters, "orders.new")));
        let all_groups = grant(Role::Consumer, &["orders.*"], &["*"]);
        assert!(all_groups.covers(&Action::on_topic(ReadDeadLetters, "orders.new")));
    }

    #[test]
    fn actions_without_a_topic() {
        let scoped = grant(Role::Producer, &["orders.*"], &["*"]);
        // Listing is allowed to anyone who may describe something.
        assert!(scoped.covers(&Action::cluster(Describe)));
        // Replaying every topic is not.
        assert!(!scoped.covers(&Action::cluster(Replay)));
        assert!(grant(Role::Producer, &["*"], &["*"]).covers(&Action::cluster(Replay)));
    }

    #[test]
    fn cluster_operations_need_an_admin_of_everything() {
        let cluster = Action::cluster(Cluster);
        assert!(grant(Role::Admin, &["*"], &["*"]).covers(&cluster));
        assert!(grant(Role::Admin, &["orders.*", "*"], &["g"]).covers(&cluster));
        assert!(!grant(Role::Admin, &["orders.*"], &["*"]).covers(&cluster));
        assert!(!grant(Role::Viewer, &["*"], &["*"]).covers(&cluster));
        assert!(Principal::anonymous_admin().may(&cluster));
    }

    #[test]
    fn a_principal_may_what_any_grant_covers() {
        let p = Principal {
            name: "svc".into(),
            grants: vec![
                grant(Role::Producer, &["orders.*"], &["*"]),
                grant(Role::Viewer, &["*"], &["*"]),
            ],
            quota: QuotaConfig::default(),
        };
        assert!(p.may(&Action::on_topic(Publish, "orders.new")));
        assert!(p.may(&Action::on_group(ReadDeadLetters, "billing", "g")));
        assert!(!p.may(&Action::on_topic(Publish, "billing")));
        assert!(!p.may(&Action::on_group(Seek, "orders.new", "g")));
    }

    #[test]
    fn only_an_admin_deletes_a_consumer_group() {
        let delete = Action::on_group(DeleteGroup, "orders", "billing");
        assert!(grant(Role::Admin, &["orders"], &["billing"]).covers(&delete));
        for role in [Role::Producer, Role::Consumer, Role::Viewer] {
            assert!(!grant(role, &["*"], &["*"]).covers(&delete), "{role}");
        }
    }
}
