//! Applying roster commands: the cluster's node list, kept in the state of
//! the roster group (see `chronos-placement`'s roster).

use std::io;

use chronos_proto::internal::{Roster, RosterCommand};
use chronos_store::{Batch, Store};
use prost::Message;

use super::{sm_err, StateMachine};

const META_ROSTER: &str = "roster";

/// The roster as last applied, if one was ever set.
pub(crate) fn read(store: &Store) -> Result<Option<Roster>, io::Error> {
    match store.get_meta(META_ROSTER).map_err(sm_err)? {
        Some(raw) => Roster::decode(raw.as_slice()).map(Some).map_err(sm_err),
        None => Ok(None),
    }
}

impl StateMachine {
    /// Replaces the roster if it is still at `expect_version`; whether it did.
    pub(super) fn apply_roster(
        &mut self,
        batch: &mut Batch<'_>,
        index: u64,
        cmd: &RosterCommand,
    ) -> bool {
        if cmd.expect_version != self.roster_version {
            return false;
        }
        let roster = Roster {
            version: index,
            nodes: cmd.nodes.clone(),
            replication_factor: cmd.replication_factor,
        };
        batch.put_meta(META_ROSTER, &roster.encode_to_vec());
        self.roster_version = index;
        true
    }
}
