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

/// Where one partition of a log ends at a cut, in the offsets of one region's cluster
/// (the writer's own topic there, or its copy `<writer>.<topic>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutPoint {
    /// The topic as the region that wrote it names it (`orders`, `decisions-orders`, …).
    pub topic: String,
    pub partition: i32,
    /// The offset after the last record held (0: none was).
    pub next_offset: i64,
    /// That record's event id, when it had one: how the same place is found in another
    /// cluster, whose offsets differ.
    pub last_event_id: Option<Uuid>,
    /// Whose cluster the offset is in; absent: the handover's new owner's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_region: Option<String>,
}

/// Where an earlier handover's cut lies in another region's offsets (found later, by
/// event id: the lost region's own log, readable again at failback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlierCut {
    pub epoch: u32,
    pub point: CutPoint,
}

/// Region `region`'s orders are written by `owner` from now on, under `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub region: String,
    pub owner: String,
    pub epoch: u32,
    /// Where the previous owner's stream ends: per partition of its topics, in the new
    /// owner's offsets (and, where a point names it, another region's). Empty for a
    /// handover nothing needs to be gated on.
    pub cut: Vec<CutPoint>,
    pub at_ms: i64,
    /// Who decided (the operator's name), and why.
    pub decided_by: String,
    pub reason: String,
    /// Earlier handovers' cuts in other regions' offsets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_cuts: Vec<EarlierCut>,
}

impl Handover {
    pub fn region(&self) -> Option<Region> {
        Region::parse(&self.region).ok()
    }

    pub fn owner(&self) -> Option<Region> {
        Region::parse(&self.owner).ok()
    }

    /// The cut's offset for `topic`'s partition in the new owner's offsets (the previous
    /// writer's topic name); `None` when the cut does not name it (a partition added
    /// since: nothing of it was held).
    pub fn cut_at(&self, topic: &str, partition: i32) -> Option<i64> {
        self.cut
            .iter()
            .find(|c| {
                c.in_region.as_deref().is_none_or(|r| r == self.owner) && c.topic == topic && c.partition == partition
            })
            .map(|c| c.next_offset)
    }
}

/// What a reader does with one record about an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Apply,
    /// Refused and recorded, never applied; the reason says why.
    Refuse(String),
    /// Apply it only once this reader's group of `topic` (this region's own topic, or a
    /// copy `<region>.<topic>`) has applied `partition` up to `offset`; until then, stop
    /// the partition here.
    After {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

/// Where a cut lies for one reader.
enum Placed {
    /// The reader's region has no offsets for this cut: it cannot place records by it.
    Unknown,
    /// The offset after the cut's last record in this partition (0: none was held).
    At(i64),
}

/// The handovers a region knows, every epoch of every region, and the regions whose
/// orders are being handed back (draining).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owners {
    handovers: std::collections::BTreeMap<String, std::collections::BTreeMap<u32, Handover>>,
    draining: std::collections::BTreeSet<String>,
}

impl Owners {
    pub fn new(handovers: impl IntoIterator<Item = Handover>) -> Owners {
        let mut owners = Owners::default();
        for handover in handovers {
            owners.insert(handover);
        }
        owners
    }

    /// Keeps the handover (a second one of the same region and epoch changes nothing).
    pub fn insert(&mut self, handover: Handover) {
        self.handovers.entry(handover.region.clone()).or_default().entry(handover.epoch).or_insert(handover);
    }

    /// While `region` drains, no checkout writes about its orders: a failback's cut is
    /// taken once its current owner's log stopped growing for them.
    pub fn set_draining(&mut self, region: &str) {
        self.draining.insert(region.to_string());
    }

    pub fn is_draining(&self, region: &Region) -> bool {
        self.draining.contains(region.as_str())
    }

    /// `region`'s newest handover.
    pub fn handover(&self, region: &Region) -> Option<&Handover> {
        self.handovers.get(region.as_str()).and_then(|h| h.values().next_back())
    }

    /// `region`'s handover to `epoch`, if there was one.
    pub fn handover_of(&self, region: &Region, epoch: u32) -> Option<&Handover> {
        self.handovers.get(region.as_str())?.get(&epoch)
    }

    /// Every region's newest handover.
    pub fn all(&self) -> impl Iterator<Item = &Handover> {
        self.handovers.values().filter_map(|h| h.values().next_back())
    }

    pub fn is_empty(&self) -> bool {
        self.handovers.is_empty()
    }

    /// The regions whose orders `owner` writes now, besides its own.
    pub fn regions_taken_by(&self, owner: &Region) -> Vec<Region> {
        self.all()
            .filter(|h| h.owner == owner.as_str() && h.region != owner.as_str())
            .filter_map(Handover::region)
            .collect()
    }

    /// Every region that wrote or writes another region's orders, and every region
    /// written for: whose logs a reader may be told to wait for.
    pub fn regions_involved(&self) -> std::collections::BTreeSet<Region> {
        self.handovers.values().flat_map(|h| h.values()).flat_map(|h| [h.region(), h.owner()]).flatten().collect()
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

    /// Who wrote `home`'s orders under `epoch`: the home itself under epoch 1.
    fn writer(&self, home: &Region, epoch: u32) -> Option<Region> {
        if epoch == 1 {
            return Some(home.clone());
        }
        self.handovers.get(home.as_str())?.get(&epoch)?.owner()
    }

    /// Where the cut of the handover to `epoch` (the end of epoch − 1's stream) lies in
    /// `reader`'s offsets, for `topic`'s `partition`.
    fn placed(&self, home: &Region, epoch: u32, reader: &Region, topic: &str, partition: i32) -> Placed {
        let Some(history) = self.handovers.get(home.as_str()) else { return Placed::Unknown };
        let Some(handover) = history.get(&epoch) else { return Placed::Unknown };
        let in_reader = |c: &&CutPoint| c.in_region.as_deref().unwrap_or(&handover.owner) == reader.as_str();
        let mut points: Vec<&CutPoint> = handover.cut.iter().filter(in_reader).collect();
        for later in history.values() {
            points.extend(later.earlier_cuts.iter().filter(|e| e.epoch == epoch).map(|e| &e.point).filter(in_reader));
        }
        if points.is_empty() {
            return Placed::Unknown;
        }
        Placed::At(points.iter().find(|c| c.topic == topic && c.partition == partition).map_or(0, |c| c.next_offset))
    }

    /// What region `here` does with a record about an order homed in `home`, read from
    /// region `log_region`'s log (its own topic, or a copy), at `offset` of `partition` of
    /// the topic the writing region calls `topic` (`orders`, …), under `epoch`.
    ///
    /// An order's stream is the home's log up to the first cut, then each owner's log, in
    /// epoch order, up to the next cut. A record under epoch `e` counts if it is on the log
    /// of epoch `e`'s writer, before the cut that ended `e` (if one did); it is applied
    /// once the reader has applied the previous writer's log up to the cut that began `e`.
    /// A reader that has no offsets for a cut (a region that was not there to take them)
    /// cannot place records by it and applies them as they come, as before regions.
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
        let Some(newest) = self.handover(home) else {
            return if log_region == home {
                Admit::Apply
            } else {
                Admit::Refuse(format!(
                    "refused: the order is homed in region {home}, whose log alone carries its events; \
                     this record is on region {log_region}'s log"
                ))
            };
        };
        let (owner, current) = (newest.owner().unwrap_or_else(|| home.clone()), newest.epoch);
        let writer = (epoch <= current).then(|| self.writer(home, epoch)).flatten();
        if writer.as_ref() != Some(log_region) {
            return Admit::Refuse(format!(
                "refused: the order is homed in region {home}, written by {owner} under epoch {current}; this record \
                 is on region {log_region}'s log under epoch {epoch}, which that log does not carry"
            ));
        }
        if epoch < current {
            if let Placed::At(end) = self.placed(home, epoch + 1, here, topic, partition) {
                if offset >= end {
                    return Admit::Refuse(format!(
                        "refused: region {log_region} wrote region {home}'s orders under epoch {epoch} until the cut \
                         of epoch {}; this record of its log is after that cut, its late tail (see `orderflow region \
                         tail {log_region}`)",
                        epoch + 1
                    ));
                }
            }
        }
        if epoch >= 2 {
            if let Placed::At(begin) = self.placed(home, epoch, here, topic, partition) {
                let previous = self.writer(home, epoch - 1).unwrap_or_else(|| home.clone());
                if begin > 0 {
                    let topic = if previous == *here { topic.to_string() } else { previous.mirrored(topic) };
                    return Admit::After { topic, partition, offset: begin };
                }
            }
        }
        Admit::Apply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str) -> Region {
        Region::parse(name).expect("region")
    }

    fn point(partition: i32, next_offset: i64, in_region: Option<&str>) -> CutPoint {
        CutPoint {
            topic: "orders".into(),
            partition,
            next_offset,
            last_event_id: None,
            in_region: in_region.map(String::from),
        }
    }

    fn takeover() -> Handover {
        Handover {
            region: "eu".into(),
            owner: "us".into(),
            epoch: 2,
            cut: vec![point(0, 10, None)],
            at_ms: 0,
            decided_by: "ops".into(),
            reason: "eu lost".into(),
            earlier_cuts: Vec::new(),
        }
    }

    /// eu takes its orders back: us's stream ends at offset 40 of us's partition 0 (offset
    /// 37 of eu's copy of it), and the takeover's cut lies at offset 12 of eu's own log.
    fn failback() -> Handover {
        Handover {
            region: "eu".into(),
            owner: "eu".into(),
            epoch: 3,
            cut: vec![point(0, 37, None), point(0, 40, Some("us"))],
            at_ms: 0,
            decided_by: "ops".into(),
            reason: "eu is back".into(),
            earlier_cuts: vec![EarlierCut { epoch: 2, point: point(0, 12, Some("eu")) }],
        }
    }

    #[test]
    fn after_a_failback_each_region_reads_the_stream_as_home_then_taker_then_home_again() {
        let owners = Owners::new([takeover(), failback()]);
        let (eu, us) = (region("eu"), region("us"));
        assert_eq!(owners.owner_of(&eu), (eu.clone(), 3));
        assert_eq!(owners.writes_as(&eu, &eu), Some(3));
        assert_eq!(owners.writes_as(&us, &eu), None);
        // In eu: its own log up to the takeover's cut, then its late tail, refused now.
        assert_eq!(owners.admit(&eu, &eu, &eu, "orders", 0, 11, 1), Admit::Apply);
        assert!(matches!(owners.admit(&eu, &eu, &eu, "orders", 0, 12, 1), Admit::Refuse(r) if r.contains("tail")));
        // us's stream, from eu's copy of it: after eu's own log up to the takeover's cut,
        // and only up to the failback's cut.
        assert_eq!(
            owners.admit(&eu, &eu, &us, "orders", 0, 36, 2),
            Admit::After { topic: "orders".into(), partition: 0, offset: 12 }
        );
        assert!(matches!(owners.admit(&eu, &eu, &us, "orders", 0, 37, 2), Admit::Refuse(r) if r.contains("tail")));
        // eu's new records: after the copy of us's stream.
        assert_eq!(
            owners.admit(&eu, &eu, &eu, "orders", 0, 50, 3),
            Admit::After { topic: "us.orders".into(), partition: 0, offset: 37 }
        );
        // In us: eu's copy up to the takeover's cut, us's own stream up to the failback's
        // cut, then eu's new records from the copy after us's own up to that cut.
        assert_eq!(owners.admit(&us, &eu, &eu, "orders", 0, 9, 1), Admit::Apply);
        assert!(matches!(owners.admit(&us, &eu, &eu, "orders", 0, 10, 1), Admit::Refuse(_)));
        assert_eq!(
            owners.admit(&us, &eu, &us, "orders", 0, 39, 2),
            Admit::After { topic: "eu.orders".into(), partition: 0, offset: 10 }
        );
        assert!(matches!(owners.admit(&us, &eu, &us, "orders", 0, 40, 2), Admit::Refuse(_)));
        assert_eq!(
            owners.admit(&us, &eu, &eu, "orders", 0, 70, 3),
            Admit::After { topic: "orders".into(), partition: 0, offset: 40 }
        );
        // Epochs on the wrong log, or not handed over yet, count nowhere.
        assert!(matches!(owners.admit(&us, &eu, &us, "orders", 0, 5, 3), Admit::Refuse(_)));
        assert!(matches!(owners.admit(&eu, &eu, &eu, "orders", 0, 5, 4), Admit::Refuse(_)));
        assert_eq!(owners.regions_involved(), [eu, us].into_iter().collect());
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
