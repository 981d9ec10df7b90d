//! Finding the record a database refuses: a batch the database refused for a value one of
//! its records carries is halved until that record is alone, and it alone is parked; every
//! other record is applied, in log order. Pure over its three effects, so the rule is
//! tested without a database.

/// How one attempt at a slice of a batch ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tried<O, R> {
    /// Applied (committed) with this outcome.
    Done(O),
    /// Refused for a record's content, with the database's reason.
    Refused(R),
    /// The member is stopping: nothing of the slice was applied.
    Stopped,
}

/// What bisecting a batch does: apply a slice, park a single record the database refused,
/// and book a committed slice.
pub(super) trait Bisect<T> {
    type Outcome;
    type Refusal: std::fmt::Display;
    type Error;
    fn apply(&mut self, slice: &[T]) -> Result<Tried<Self::Outcome, Self::Refusal>, Self::Error>;
    /// `None` when the member is stopping.
    fn park(&mut self, record: &[T], refusal: Self::Refusal) -> Result<Option<Self::Outcome>, Self::Error>;
    fn done(&mut self, slice: &[T], outcome: Self::Outcome);
}

/// Applies `batch`, halving it on a refusal until the refused record is alone and parked.
/// Returns false if the member stopped before the whole batch was applied.
pub(super) fn apply_bisecting<T, B: Bisect<T>>(batch: &[T], effects: &mut B) -> Result<bool, B::Error> {
    match effects.apply(batch)? {
        Tried::Done(outcome) => {
            effects.done(batch, outcome);
            Ok(true)
        }
        Tried::Stopped => Ok(false),
        Tried::Refused(refusal) if batch.len() > 1 => {
            tracing::warn!(records = batch.len(), %refusal,
                "The database refused a value in this batch. Applying it in halves to find the record.");
            let (first, second) = batch.split_at(batch.len() / 2);
            Ok(apply_bisecting(first, effects)? && apply_bisecting(second, effects)?)
        }
        Tried::Refused(refusal) => match effects.park(batch, refusal)? {
            Some(outcome) => {
                effects.done(batch, outcome);
                Ok(true)
            }
            None => Ok(false),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database that refuses any slice holding a poisoned record, and stops the member
    /// after `stop_after` attempts.
    #[derive(Default)]
    struct Fake {
        poisoned: Vec<u32>,
        attempts: usize,
        stop_after: Option<usize>,
        applied: Vec<u32>,
        parked: Vec<u32>,
    }

    impl Bisect<u32> for Fake {
        type Outcome = usize;
        type Refusal = String;
        type Error = ();
        fn apply(&mut self, slice: &[u32]) -> Result<Tried<usize, String>, ()> {
            self.attempts += 1;
            if self.stop_after.is_some_and(|n| self.attempts > n) {
                return Ok(Tried::Stopped);
            }
            Ok(match slice.iter().find(|r| self.poisoned.contains(r)) {
                Some(r) => Tried::Refused(format!("record {r} is too long")),
                None => Tried::Done(slice.len()),
            })
        }
        fn park(&mut self, record: &[u32], refusal: String) -> Result<Option<usize>, ()> {
            assert_eq!(record.len(), 1, "only a single record is parked");
            assert!(refusal.contains(&record[0].to_string()));
            self.parked.push(record[0]);
            Ok(Some(1))
        }
        fn done(&mut self, slice: &[u32], _outcome: usize) {
            self.applied.extend(slice.iter().filter(|r| !self.parked.contains(r)));
        }
    }

    #[test]
    fn a_batch_the_database_accepts_is_applied_in_one_attempt() {
        let mut db = Fake::default();
        assert_eq!(apply_bisecting(&[1, 2, 3], &mut db), Ok(true));
        assert_eq!((db.attempts, db.applied, db.parked), (1, vec![1, 2, 3], vec![]));
    }

    #[test]
    fn only_the_refused_records_are_parked_and_every_other_is_applied_in_log_order() {
        let batch: Vec<u32> = (0..37).collect();
        let mut db = Fake { poisoned: vec![5, 6, 30], ..Fake::default() };
        assert_eq!(apply_bisecting(&batch, &mut db), Ok(true));
        assert_eq!(db.parked, [5, 6, 30]);
        let expected: Vec<u32> = batch.iter().copied().filter(|r| ![5, 6, 30].contains(r)).collect();
        assert_eq!(db.applied, expected);
        // Halving, not one attempt per record.
        assert!(db.attempts < 30, "{} attempts", db.attempts);
    }

    #[test]
    fn a_refused_single_record_is_parked_without_another_attempt() {
        let mut db = Fake { poisoned: vec![9], ..Fake::default() };
        assert_eq!(apply_bisecting(&[9], &mut db), Ok(true));
        assert_eq!((db.attempts, db.parked), (1, vec![9]));
    }

    #[test]
    fn stopping_while_bisecting_applies_nothing_more_and_says_so() {
        let mut db = Fake { poisoned: vec![1], stop_after: Some(2), ..Fake::default() };
        assert_eq!(apply_bisecting(&[0, 1, 2, 3], &mut db), Ok(false));
        assert!(db.parked.is_empty());
        assert!(db.applied.is_empty(), "{:?}", db.applied);
    }
}
