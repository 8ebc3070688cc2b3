//! The openraft type configuration of a partition's Raft group and the command it replicates.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use chronos_proto::internal::{
    command, CancelCommand, CancelsCommand, Command as CommandPb, DeliveryCommand, FireCommand,
    GroupCommand, PublishCommand, RedriveCommand, RosterCommand, ScheduleCommand, TrimCommand,
};
use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

openraft::declare_raft_types!(
    /// Types of one partition's Raft group.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = openraft::impls::BasicNode,
        AsyncRuntime = openraft::impls::TokioRuntime,
        ErrorSource = crate::error::StorageCause,
);

pub type NodeId = u64;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, tokio::fs::File>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
pub type RaftServerMetrics = openraft::metrics::RaftServerMetrics<TypeConfig>;

/// A state-machine command. The wire/disk form is the `chronos.internal.v1.Command`
/// protobuf; serde (required by openraft's `serde` feature) carries the same bytes.
#[derive(Clone)]
pub struct Command {
    pub pb: CommandPb,
    /// What the leader that proposed a `Fire` read of its events, one value
    /// per ref, in the Fire's order. Never written or sent: it rides along
    /// only in the proposing node's memory (its log cache), so that applying
    /// the `Fire` there checks which events are still pending from the keys
    /// alone instead of reading every value a second time. A `pending` key's
    /// value never changes (an offset is never reused), so the values are
    /// the ones any replica reads.
    pub released: Option<Arc<[Bytes]>>,
}

impl PartialEq for Command {
    fn eq(&self, other: &Command) -> bool {
        self.pb == other.pb
    }
}

impl Command {
    /// Cancels decided in order in one entry.
    pub fn cancels(cancels: Vec<CancelCommand>) -> Command {
        Command::from(CommandPb {
            kind: Some(command::Kind::Cancels(CancelsCommand { cancels })),
        })
    }

    /// A `Fire` with the values its leader read (see [`Command::released`]).
    pub fn fire_released(cmd: FireCommand, values: Vec<Bytes>) -> Command {
        assert_eq!(cmd.events.len(), values.len(), "one value per fired ref");
        Command {
            released: Some(values.into()),
            ..Command::fire(cmd)
        }
    }

    pub fn fire(cmd: FireCommand) -> Command {
        Command::from(CommandPb {
            kind: Some(command::Kind::Fire(cmd)),
        })
    }

    pub fn publish(cmd: PublishCommand) -> Command {
        Command::from(CommandPb {
            kind: Some(command::Kind::Publish(cmd)),
        })
    }

    pub fn group(cmd: GroupCommand) -> Command {
        Command::from(CommandPb {
            kind: Some(command::Kind::Group(cmd)),
        })
    }

    pub fn delivery(cmd: DeliveryCommand) -> Command {
        Command::from(CommandPb {
            kind: Some(command::Kind::Delivery(cmd)),
        })
    }

    pub fn trim(cmd: TrimCommand) -> Command {
        Command::from(CommandPb {
            kind: Some(command::Kind::Trim(cmd)),
        })
    }

    pub fn redrive(cmd: RedriveCommand) -> Command {
        Command::from(CommandPb {
            kind: Some(command::Kind::Redrive(cmd)),
        })
    }

    pub fn schedule(cmd: ScheduleCommand) -> Command {
        Command::from(CommandPb {
            kind: Some(command::Kind::Schedule(cmd)),
        })
    }

    pub fn roster(cmd: RosterCommand) -> Command {
        Command::from(CommandPb {
            kind: Some(command::Kind::Roster(cmd)),
        })
    }

    /// Bytes held in memory beyond the encoding (for cache budgets).
    pub fn released_bytes(&self) -> usize {
        self.released
            .as_ref()
            .map_or(0, |values| values.iter().map(Bytes::len).sum())
    }

    pub fn encode_to_vec(&self) -> Vec<u8> {
        self.pb.encode_to_vec()
    }

    pub fn decode(buf: &[u8]) -> Result<Command, prost::DecodeError> {
        CommandPb::decode(buf).map(Command::from)
    }

    /// (first offset, number of events) when this command publishes events.
    pub fn offsets(&self) -> Option<(u64, u64)> {
        match &self.pb.kind {
            Some(command::Kind::Publish(p)) => Some((p.first_offset, p.events.len() as u64)),
            _ => None,
        }
    }
}

impl From<CommandPb> for Command {
    fn from(pb: CommandPb) -> Command {
        Command { pb, released: None }
    }
}

fn op_name(op: &chronos_proto::internal::schedule_command::Op) -> &'static str {
    use chronos_proto::internal::schedule_command::Op;
    match op {
        Op::Create(_) => "create",
        Op::Update(_) => "update",
        Op::Pause(_) => "pause",
        Op::Resume(_) => "resume",
        Op::Delete(_) => "delete",
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pb.kind {
            Some(command::Kind::Publish(p)) => {
                write!(
                    f,
                    "Publish{{first_offset: {}, events: {}}}",
                    p.first_offset,
                    p.events.len()
                )
            }
            Some(command::Kind::Fire(fire)) => {
                write!(
                    f,
                    "Fire{{fire_ts: {}, events: {}}}",
                    fire.fire_ts,
                    fire.events.len()
                )
            }
            Some(command::Kind::Cancel(c)) => write!(f, "Cancel{{{}/{}}}", c.topic, c.message_id),
            Some(command::Kind::Cancels(c)) => write!(f, "Cancels{{{}}}", c.cancels.len()),
            Some(command::Kind::Schedule(s)) => {
                write!(f, "Schedule{{{:?}}}", s.op.as_ref().map(op_name))
            }
            Some(command::Kind::Group(g)) => {
                write!(f, "Group{{{}/{} seek: {}}}", g.topic, g.group, g.seek)
            }
            Some(command::Kind::Delivery(d)) => {
                let items: usize = d.groups.iter().map(|g| g.items.len()).sum();
                write!(f, "Delivery{{groups: {}, items: {items}}}", d.groups.len())
            }
            Some(command::Kind::Trim(t)) => write!(f, "Trim{{topics: {}}}", t.topics.len()),
            Some(command::Kind::Redrive(r)) => {
                write!(f, "Redrive{{{}/{}: {}}}", r.topic, r.group, r.seqs.len())
            }
            Some(command::Kind::Roster(r)) => {
                write!(
                    f,
                    "Roster{{v{}: {} nodes}}",
                    r.expect_version,
                    r.nodes.len()
                )
            }
            None => write!(f, "Empty"),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.encode_to_vec())
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(CommandVisitor)
    }
}

/// Decodes the protobuf bytes in place: binary formats (the node-to-node
/// transport's) hand over a slice; a format without bytes sends a sequence.
struct CommandVisitor;

impl<'de> serde::de::Visitor<'de> for CommandVisitor {
    type Value = Command;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the bytes of a protobuf Command")
    }

    fn visit_bytes<E: serde::de::Error>(self, raw: &[u8]) -> Result<Command, E> {
        Command::decode(raw).map_err(E::custom)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
        let mut raw = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(b) = seq.next_element::<u8>()? {
            raw.push(b);
        }
        self.visit_bytes(&raw)
    }
}

/// What applying one entry reports back to the proposer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Offset the next event gets after this entry.
    pub next_offset: u64,
    /// Events this entry moved from pending to a fire log (a `Fire` entry).
    pub fired: u64,
    /// What a `Cancels` (or an older single `Cancel`) entry found, one
    /// outcome per cancel in its order.
    pub cancels: Vec<CancelOutcome>,
    /// A `Group` entry: the group's (cursor, from_due_ts) after it.
    pub group: Option<(u64, i64)>,
    /// A `Group` entry that deleted the group: what went with it (None
    /// when there was no such group).
    pub group_deleted: Option<Option<GroupDeleted>>,
    /// A `Redrive` entry: dead letters put back.
    pub redriven: u64,
    /// A `Roster` entry: whether it replaced the roster (its expected
    /// version was still current).
    pub roster: Option<bool>,
    /// A `Publish` entry: offsets of the pending events its reschedules removed.
    pub unscheduled: Vec<u64>,
    /// A `Schedule` entry: what it did.
    pub schedule: Option<crate::schedule::ScheduleApplied>,
}

/// What deleting a consumer group dropped in one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDeleted {
    pub in_flight: u64,
    pub dead_letters: u64,
}

/// The result of applying one cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelOutcome {
    /// Was pending; removed. It will not fire.
    Cancelled { offset: u64, due_ts: i64 },
    /// No such (topic, message_id) within the dedup window.
    NotFound,
    /// It already fired (at or after its due time).
    AlreadyFired { offset: u64 },
    /// It was cancelled before.
    AlreadyCancelled { offset: u64 },
}
