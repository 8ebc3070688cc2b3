//! Changes of a group through the log that hold its delivery while they
//! apply: a seek (SeekGroup) and a delete (DeleteGroup).

use chronos_proto::internal::GroupCommand;

use super::{Dispatcher, GroupKey};
use crate::delivery::Reply;
use crate::owner::{Completions, Ctx, TermCompletion, TermError, Written};
use crate::types::{Command, GroupDeleted};
use crate::{wall_ms, PartitionError};

/// What a group's `Group` entry in flight does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Seek,
    Delete,
}

/// A seek or delete waiting for its `Group` entry to apply.
pub(crate) struct Changing {
    key: GroupKey,
    reply: ChangeReply,
}

pub(in crate::delivery) enum ChangeReply {
    Seek(Reply<()>),
    Delete(Reply<Option<GroupDeleted>>),
}

impl Changing {
    /// The change is durable (or failed) though its term ended.
    pub fn answer(self, written: &Written) {
        match self.reply {
            ChangeReply::Seek(reply) => {
                let _ = reply.send(written.as_ref().map(|_| ()).map_err(Clone::clone));
            }
            ChangeReply::Delete(reply) => {
                let _ = reply.send(match written {
                    Ok(applied) => Ok(applied.group_deleted.flatten()),
                    Err(e) => Err(e.clone()),
                });
            }
        }
    }
}

impl Dispatcher {
    /// Moves a group (`Some(ts)`) or deletes it (`None`) through the log.
    /// While the entry is out the group is neither delivered from nor
    /// recorded, so no older cursor or in-flight record lands after it.
    pub(in crate::delivery) async fn change(
        &mut self,
        ctx: &Ctx,
        epoch: u64,
        key: GroupKey,
        seek_to: Option<i64>,
        reply: ChangeReply,
        completions: &mut Completions,
    ) -> Result<(), TermError> {
        let not_now = |why: String| {
            PartitionError::NotFound(format!(
                "consumer group {:?} on topic {:?} {why} in partition {}",
                key.1, key.0, ctx.partition
            ))
        };
        let refusal = match (self.groups.get(&key), self.changing.get(&key)) {
            (None, _) => Some(not_now("does not exist".into())),
            (Some(_), Some(Change::Seek)) => Some(PartitionError::InUse(format!(
                "consumer group {:?} on topic {:?} is being sought already in partition {}",
                key.1, key.0, ctx.partition
            ))),
            (Some(_), Some(Change::Delete)) => Some(not_now("is being deleted".into())),
            (Some(g), None) if seek_to.is_none() && !g.members.is_empty() => {
                Some(PartitionError::InUse(format!(
                    "consumer group {:?} on topic {:?} has {} member(s) subscribed to \
                     partition {}; they must leave before it is deleted",
                    key.1,
                    key.0,
                    g.members.len(),
                    ctx.partition
                )))
            }
            (Some(_), None) => None,
        };
        if let Some(e) = refusal {
            Changing { key, reply }.answer(&Err(e));
            return Ok(());
        }
        // Earlier cursor advances must apply before a seek, or they would
        // move a backward seek forward again.
        self.flush(ctx, epoch, completions, true).await?;
        let cmd = GroupCommand {
            topic: key.0.clone(),
            group: key.1.clone(),
            start: 0,
            start_ts: seek_to.unwrap_or(0),
            now_ts: wall_ms(),
            seek: seek_to.is_some(),
            delete: seek_to.is_none(),
        };
        let change = match seek_to {
            Some(_) => Change::Seek,
            None => Change::Delete,
        };
        let changing = Changing {
            key: key.clone(),
            reply,
        };
        match completions.propose(ctx, Command::group(cmd)).await {
            Ok(applied) => {
                self.changing.insert(key, change);
                completions.push_term(epoch, async move {
                    TermCompletion::Changed(changing, applied.await)
                });
            }
            Err(e) => changing.answer(&Err(e)),
        }
        Ok(())
    }

    /// A seek's or delete's entry applied (or failed).
    pub fn changed(&mut self, ctx: &Ctx, changing: Changing, written: Written) {
        let key = &changing.key;
        let change = self.changing.remove(key);
        match (&written, change) {
            (Ok(applied), Some(Change::Delete)) if applied.group_deleted.is_some() => {
                self.groups.remove(key);
                self.busy.remove(key);
                ctx.gauges.remove(key);
            }
            (Ok(applied), _) => {
                if let (Some((cursor, from_due_ts)), Some(g)) =
                    (applied.group, self.groups.get_mut(key))
                {
                    g.reset(cursor, from_due_ts);
                }
                self.busy.insert(key.clone());
            }
            (Err(_), _) => {
                self.busy.insert(key.clone());
            }
        }
        self.needs_pump = true;
        changing.answer(&written);
    }

    /// Whether an attach to `key` must wait: its group is being deleted.
    pub(super) fn being_deleted(&self, key: &GroupKey) -> bool {
        self.changing.get(key) == Some(&Change::Delete)
    }
}

impl ChangeReply {
    pub(in crate::delivery) fn seek(reply: Reply<()>) -> ChangeReply {
        ChangeReply::Seek(reply)
    }

    pub(in crate::delivery) fn delete(reply: Reply<Option<GroupDeleted>>) -> ChangeReply {
        ChangeReply::Delete(reply)
    }
}
