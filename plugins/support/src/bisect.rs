//! Bisection of a batch to isolate the changes that cannot apply: the database plugins
//! apply each range it hands out under a savepoint, keep what applies, roll back what
//! fails, and report it; a range that fails is split in two until each bad change stands
//! alone. Only the order is decided here: applying, rolling back and reporting are the
//! plugin's, with its own connection and errors, so nothing here waits on a database.
//!
//! **Invariant:** ranges come out in order (a range's left half is finished before its
//! right half starts), so the changes to one row keep their queue order.

use std::ops::Range;

/// The ranges still to try, over positions `0..len`.
#[derive(Debug)]
pub struct Bisection {
    /// The next one on top.
    ranges: Vec<Range<usize>>,
}

impl Bisection {
    /// Bisection of `len` changes, starting with all of them.
    pub fn new(len: usize) -> Bisection {
        Bisection {
            ranges: std::iter::once(0..len).collect(),
        }
    }

    /// The next range to apply, or `None` when every change has applied or been found
    /// at fault.
    pub fn next_range(&mut self) -> Option<Range<usize>> {
        let mut range = self.ranges.pop()?;
        while range.is_empty() {
            range = self.ranges.pop()?;
        }
        Some(range)
    }

    /// `range`, the one last handed out, failed: it is split, to be tried half by half.
    /// Answers the position of the change at fault when it was the only one.
    pub fn failed(&mut self, range: Range<usize>) -> Option<usize> {
        if range.len() == 1 {
            return Some(range.start);
        }
        let mid = range.start + range.len() / 2;
        self.ranges.push(mid..range.end);
        self.ranges.push(range.start..mid);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bisects `len` changes of which `bad` fail; answers the ranges tried and the
    /// changes found at fault, in order.
    fn bisect(len: usize, bad: &[usize]) -> (Vec<Range<usize>>, Vec<usize>) {
        let mut bisection = Bisection::new(len);
        let (mut tried, mut found) = (Vec::new(), Vec::new());
        while let Some(range) = bisection.next_range() {
            tried.push(range.clone());
            if bad.iter().any(|b| range.contains(b)) {
                found.extend(bisection.failed(range));
            }
        }
        (tried, found)
    }

    #[test]
    fn each_bad_change_is_found_alone_and_the_rest_applies_in_order() {
        let (tried, found) = bisect(8, &[2, 5]);
        assert_eq!(found, [2, 5]);
        assert_eq!(
            tried,
            [
                0..8,
                0..4,
                0..2,
                2..4,
                2..3,
                3..4,
                4..8,
                4..6,
                4..5,
                5..6,
                6..8
            ]
        );
        let applied: Vec<usize> = tried
            .iter()
            .filter(|r| !r.contains(&2) && !r.contains(&5))
            .flat_map(|r| r.clone())
            .collect();
        assert_eq!(applied, [0, 1, 3, 4, 6, 7]);
    }

    #[test]
    fn odd_lengths_and_edges() {
        assert_eq!(bisect(0, &[]), (vec![], vec![]));
        let (tried, found) = bisect(1, &[0]);
        assert_eq!((tried.len(), &tried[0], found), (1, &(0..1), vec![0]));
        let (tried, found) = bisect(7, &[0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(found, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(tried.len(), 13);
        let (tried, found) = bisect(3, &[]);
        assert_eq!((tried.len(), &tried[0], found), (1, &(0..3), vec![]));
    }
}
