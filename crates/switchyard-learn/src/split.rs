//! Seeded train/test splits by question id.
//!
//! A router measured on questions it was trained on looks better than it is, so every split here is by question
//! id: all records sharing an id land on the same side, and no id is on both. The procedure is deterministic and
//! documented so that anyone can reproduce a split from the seed alone:
//!
//! 1. take the distinct ids;
//! 2. give each id the key [`stable_hash`]`(seed, id)` and order the ids by (key, id);
//! 3. the first `round(test_fraction * distinct ids)` ids form the test side (for k folds: the id at rank `r`
//!    belongs to fold `r mod k`);
//! 4. each record goes to the side of its id; both index lists keep the records' original order.

use std::collections::HashMap;

use crate::dataset::OutcomeTable;
use crate::error::{LearnError, Result};
use crate::hash::stable_hash;

/// Record indices on each side of a split.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// Records to train on.
    pub train: Vec<usize>,
    /// Records to test on; no id of these is among the training records.
    pub test: Vec<usize>,
}

/// The distinct ids ranked by their seeded key, and each id's rank.
fn ranks<S: AsRef<str>>(ids: &[S], seed: u64) -> HashMap<&str, usize> {
    let mut distinct: Vec<(u64, &str)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        let id = id.as_ref();
        if seen.insert(id) {
            distinct.push((stable_hash(seed, id.as_bytes()), id));
        }
    }
    distinct.sort_unstable();
    distinct.into_iter().enumerate().map(|(rank, (_, id))| (id, rank)).collect()
}

/// Splits records by id, `test_fraction` of the distinct ids (rounded) going to the test side.
pub fn split_by_id<S: AsRef<str>>(ids: &[S], test_fraction: f64, seed: u64) -> Result<Split> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(LearnError::invalid("test_fraction", format!("{test_fraction} is not in (0, 1)")));
    }
    let rank = ranks(ids, seed);
    let n_test = (test_fraction * rank.len() as f64).round() as usize;
    if n_test == 0 || n_test == rank.len() {
        return Err(LearnError::Empty {
            what: format!("a {test_fraction} split of {} distinct ids leaves one side empty", rank.len()),
        });
    }
    let mut split = Split::default();
    for (i, id) in ids.iter().enumerate() {
        if rank.get(id.as_ref()).is_some_and(|&r| r < n_test) { split.test.push(i) } else { split.train.push(i) }
    }
    Ok(split)
}

/// `k` folds by id: fold `f` tests on the ids of rank `r` with `r mod k == f` and trains on the rest.
pub fn kfold_by_id<S: AsRef<str>>(ids: &[S], k: usize, seed: u64) -> Result<Vec<Split>> {
    let rank = ranks(ids, seed);
    if k < 2 || k > rank.len() {
        return Err(LearnError::invalid("folds", format!("{k} folds for {} distinct ids", rank.len())));
    }
    let mut folds = vec![Split::default(); k];
    for (i, id) in ids.iter().enumerate() {
        let fold_of_id = rank.get(id.as_ref()).map_or(0, |r| r % k);
        for (f, split) in folds.iter_mut().enumerate() {
            if f == fold_of_id { split.test.push(i) } else { split.train.push(i) }
        }
    }
    Ok(folds)
}

/// Splits a table's queries by id (see the module docs) into (train, test) tables.
pub fn split_table(table: &OutcomeTable, test_fraction: f64, seed: u64) -> Result<(OutcomeTable, OutcomeTable)> {
    let ids: Vec<&str> = table.queries.iter().map(|q| q.id.as_str()).collect();
    let split = split_by_id(&ids, test_fraction, seed)?;
    Ok((table.subset(&split.train), table.subset(&split.test)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn ids() -> Vec<String> {
        // 200 records over 150 distinct ids: some questions appear twice.
        (0..200).map(|i| format!("q{}", i % 150)).collect()
    }

    #[test]
    fn no_id_on_both_sides_and_sizes_follow_the_fraction() {
        let ids = ids();
        let s = split_by_id(&ids, 0.2, 7).expect("valid");
        assert_eq!(s.train.len() + s.test.len(), ids.len());
        let train: HashSet<&str> = s.train.iter().map(|&i| ids[i].as_str()).collect();
        let test: HashSet<&str> = s.test.iter().map(|&i| ids[i].as_str()).collect();
        assert!(train.is_disjoint(&test));
        assert_eq!(test.len(), 30);
        assert!(s.test.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let ids = ids();
        assert_eq!(split_by_id(&ids, 0.3, 1).ok(), split_by_id(&ids, 0.3, 1).ok());
        assert_ne!(split_by_id(&ids, 0.3, 1).ok(), split_by_id(&ids, 0.3, 2).ok());
    }

    #[test]
    fn folds_partition_the_ids() {
        let ids = ids();
        let folds = kfold_by_id(&ids, 5, 3).expect("valid");
        let mut tested = vec![0usize; ids.len()];
        for f in &folds {
            let train: HashSet<&str> = f.train.iter().map(|&i| ids[i].as_str()).collect();
            assert!(f.test.iter().all(|&i| !train.contains(ids[i].as_str())));
            for &i in &f.test {
                tested[i] += 1;
            }
        }
        assert!(tested.iter().all(|&n| n == 1));
    }

    #[test]
    fn bad_arguments_are_refused() {
        let ids = ids();
        assert!(split_by_id(&ids, 0.0, 1).is_err());
        assert!(split_by_id(&ids, 1.0, 1).is_err());
        assert!(split_by_id(&["a"], 0.5, 1).is_err());
        assert!(kfold_by_id(&ids, 1, 1).is_err());
    }
}
