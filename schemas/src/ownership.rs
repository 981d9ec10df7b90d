//! Who writes a region's orders: the region itself (ownership epoch 1), or, after an
//! operator declared it lost, the region that took it over (epoch 2, 3, … after each
//! handover). One writer per order's stream at any time, and every reader can tell which
//! records belong to the stream:
//!
//! - A handover is recorded as a [`Handover`] on the new owner's control topic
//!   ([`control_topic`]) and in each region's database. Its **cut** names, per partition of
//!   each of the lost region's topics as the new owner's cluster holds them (the copies
//!   `<region>.<topic>`), the offset after the last record it holds, and that record's
//!   event id (offsets of a copy differ from the original's; the id finds it there).
//! - Records the new owner appends about the region's orders carry [`EPOCH_HEADER`] with
//!   the handover's epoch.
//! - A reader applies a record of the new epoch only once the copy's records before the
//!   cut are applied (so an order's stream is the copy up to the cut, then the new
//!   owner's log), and refuses (and records) a copy's record after the cut: the lost
//!   region's late tail, which `orderflow region tail` reports.
//!
//! Pure: the rules here are data in, verdict out; the store and the checkout apply them.
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Region;

/// The record header carrying the ownership epoch under which a region other than an
/// order's home appended it. Absent: epoch 1, the home itself.
pub const EPOCH_HEADER: &str = "orderflow-epoch";

/// The control topic of the pipeline on `orders_topic`: handovers, appended by operators
/// only. Copied to the other regions like every topic.
pub fn control_topic(orders_topic: &str) -> String {
    format!("regions-{orders_topic}")
}

/// The epoch a record's [`EPOCH_HEADER`] names (1 when it names none validly).
pub fn epoch_of_header(value: Option<&[u8]>) -> u32 {
    value.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse::<u32>().ok()).filter(|e| *e >= 1).unwrap_or(1)
}

/// Where the new owner's copy of one partition of the lost region's topic ends at the cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutPoint {
    /// The topic as the lost region names it (`orders`, `decisions-orders`, …).
    pub topic: String,
    pub partition: i32,
    /// The offset after the last record the copy holds (0: it held none).
    pub next_offset: i64,
    /// That record's event id, when it had one.
    pub last_event_id: Option<Uuid>,
}

/// Region `region`'s orders are written by `owner` from now on, under `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub region: String,
    pub owner: String,
    pub epoch: u32,
    /// Empty for a handover back to the region itself that nothing needs to be gated on.
    pub cut: Vec<CutPoint>,
    pub at_ms: i64,
    /// Who decided (the operator's name), and why.
    pub decided_by: String,
    pub reason: String,
}

impl Handover {
    pub fn region(&self) -> Option<Region> {
        Region::parse(&self.region).ok()
    }

    pub fn owner(&self) -> Option<Region> {
        Region::parse(&self.owner).ok()
    }

    /// The cut's offset for `topic`'s partition (the lost region's topic name); `None`
    /// when the cut does not name it (a partition added since: nothing of it was held).
    pub fn cut_at(&self, topic: &str, partition: i32) -> Option<i64> {
        self.cut.iter().find(|c| c.topic == topic && c.partition == partition).map(|c| c.next_offset)
    }
}

/// What a reader does with one record about an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Apply,
    /// Refused and recorded, never applied; the reason says why.
    Refuse(String),
    /// Apply it only once this reader's group of the copy `topic` (a `<region>.<topic>`
    /// name) has applied `partition` up to `offset`; until then, stop the partition here.
    After {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

/// The handovers a region knows, the newest per region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owners {
    handovers: std::collections::BTreeMap<String, Handover>,
}

impl Owners {
    pub fn new(handovers: impl IntoIterator<Item = Handover>) -> Owners {
        let mut owners = Owners::default();
        for handover in handovers {
            owners.insert(handover);
        }
        owners
    }

    /// Keeps the handover if it is newer than the one known for its region.
    pub fn insert(&mut self, handover: Handover) {
        let newer = self.handovers.get(&handover.region).is_none_or(|known| known.epoch < handover.epoch);
        if newer {
            self.handovers.insert(handover.region.clone(), handover);
        }
    }

    pub fn handover(&self, region: &Region) -> Option<&Handover> {
        self.handovers.get(region.as_str())
    }

    /// Every region's newest handover.
    pub fn all(&self) -> impl Iterator<Item = &Handover> {
        self.handovers.values()
    }

    pub fn is_empty(&self) -> bool {
        self.handovers.is_empty()
    }

    /// The regions whose orders `owner` writes now, besides its own.
    pub fn regions_taken_by(&self, owner: &Region) -> Vec<Region> {
        self.handovers
            .values()
            .filter(|h| h.owner == owner.as_str() && h.region != owner.as_str())
            .filter_map(Handover::region)
            .collect()
    }

    /// Who writes `home`'s orders now, and under which epoch.
    pub fn owner_of(&self, home: &Region) -> (Region, u32) {
        match self.handover(home) {
            Some(h) => (h.owner().unwrap_or_else(|| home.clone()), h.epoch),
            None => (home.clone(), 1),
        }
    }

    /// The epoch `here` writes `home`'s orders under, if `here` writes them now.
    pub fn writes_as(&self, here: &Region, home: &Region) -> Option<u32> {
        let (owner, epoch) = self.owner_of(home);
        (owner == *here).then_some(epoch)
    }

    /// What region `here` does with a record about an order homed in `home`, read from
    /// region `log_region`'s log (its own topic, or a copy), at `offset` of `partition` of
    /// the topic the lost region calls `topic` (`orders`, …), under `epoch`.
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &self,
        here: &Region,
        home: &Region,
        log_region: &Region,
        topic: &str,
        partition: i32,
        offset: i64,
        epoch: u32,
    ) -> Admit {
        let Some(handover) = self.handover(home) else {
            return if log_region == home {
                Admit::Apply
            } else {
                Admit::Refuse(format!(
                    "refused: the order is homed in region {home}, whose log alone carries its events; \
                     this record is on region {log_region}'s log"
                ))
            };
        };
        let owner = handover.owner().unwrap_or_else(|| home.clone());
        if log_region == home {
            // The home's own log: up to the cut, the order's stream; after it, the tail
            // the home appended once it had been taken over. The cut is in the new
            // owner's copy offsets, so only the new owner can place a copy's record.
            if owner != *here || log_region == here {
                return Admit::Apply;
            }
            return match handover.cut_at(topic, partition) {
                Some(cut) if offset < cut => Admit::Apply,
                _ => Admit::Refuse(format!(
                    "refused: region {home} was taken over by {owner} (epoch {}); this record of its log is after \
                     the cut, its late tail (see `orderflow region tail {home}`)",
                    handover.epoch
                )),
            };
        }
        if *log_region != owner || epoch != handover.epoch {
            return Admit::Refuse(format!(
                "refused: the order is homed in region {home}, written by {owner} under epoch {}; this record is \
                 on region {log_region}'s log under epoch {epoch}",
                handover.epoch
            ));
        }
        if owner != *here {
            return Admit::Apply;
        }
        match handover.cut_at(topic, partition) {
            Some(cut) if cut > 0 => Admit::After { topic: home.mirrored(topic), partition, offset: cut },
            _ => Admit::Apply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str) -> Region {
        Region::parse(name).expect("region")
    }

    fn takeover() -> Handover {
        Handover {
            region: "eu".into(),
            owner: "us".into(),
            epoch: 2,
            cut: vec![CutPoint { topic: "orders".into(), partition: 0, next_offset: 10, last_event_id: None }],
            at_ms: 0,
            decided_by: "ops".into(),
            reason: "eu lost".into(),
        }
    }

    #[test]
    fn before_any_handover_only_the_home_log_carries_an_order() {
        let owners = Owners::default();
        let (eu, us) = (region("eu"), region("us"));
        assert_eq!(owners.admit(&us, &eu, &eu, "orders", 0, 5, 1), Admit::Apply);
        assert!(matches!(owners.admit(&us, &eu, &us, "orders", 0, 5, 1), Admit::Refuse(_)));
        assert_eq!(owners.owner_of(&eu), (eu.clone(), 1));
        assert_eq!(owners.writes_as(&us, &eu), None);
    }

    #[test]
    fn after_a_takeover_the_copy_counts_up_to_the_cut_and_the_new_owner_after_it() {
        let owners = Owners::new([takeover()]);
        let (eu, us) = (region("eu"), region("us"));
        assert_eq!(owners.writes_as(&us, &eu), Some(2));
        // The copy of eu's log in us: before the cut applied, after it refused (the tail).
        assert_eq!(owners.admit(&us, &eu, &eu, "orders", 0, 9, 1), Admit::Apply);
        assert!(matches!(owners.admit(&us, &eu, &eu, "orders", 0, 10, 1), Admit::Refuse(r) if r.contains("tail")));
        // A partition the cut does not name held nothing: all of it is tail.
        assert!(matches!(owners.admit(&us, &eu, &eu, "orders", 1, 0, 1), Admit::Refuse(_)));
        // us's own log under the new epoch: after the copy's records before the cut.
        assert_eq!(
            owners.admit(&us, &eu, &us, "orders", 0, 3, 2),
            Admit::After { topic: "eu.orders".into(), partition: 0, offset: 10 }
        );
        assert_eq!(owners.admit(&us, &eu, &us, "orders", 1, 3, 2), Admit::Apply, "nothing held before the cut");
        // us's log under another epoch: refused.
        assert!(matches!(owners.admit(&us, &eu, &us, "orders", 0, 3, 1), Admit::Refuse(_)));
        assert!(matches!(owners.admit(&us, &eu, &us, "orders", 0, 3, 3), Admit::Refuse(_)));
        // eu, back, reads us's copy of the new epoch's records.
        assert_eq!(owners.admit(&eu, &eu, &us, "orders", 0, 3, 2), Admit::Apply);
    }

    #[test]
    fn the_newest_handover_of_a_region_wins_and_headers_name_epochs() {
        let mut back = takeover();
        back.owner = "eu".into();
        back.epoch = 3;
        let owners = Owners::new([back.clone(), takeover()]);
        assert_eq!(owners.owner_of(&region("eu")), (region("eu"), 3));
        assert_eq!(epoch_of_header(Some(b"2")), 2);
        assert_eq!(epoch_of_header(Some(b"0")), 1);
        assert_eq!(epoch_of_header(Some(b"x")), 1);
        assert_eq!(epoch_of_header(None), 1);
        assert_eq!(control_topic("orders"), "regions-orders");
    }
}
