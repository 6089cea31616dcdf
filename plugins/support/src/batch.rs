//! A batch's operations as a database plugin plans them: taken out of their changes, in
//! order, each with where it came from, so that what a statement returns, or the error it
//! raises, goes back to the operation's own change.
//!
//! May depend on: nothing beyond core and alloc.

/// Where an operation comes from: its change and its place in that change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub change: usize,
    pub operation: usize,
}

/// The operations of `changes`, change by change and each change's in order, with their
/// origins.
pub fn operations<'a, T: 'a>(
    changes: impl IntoIterator<Item = &'a [T]>,
) -> impl Iterator<Item = (Origin, &'a T)> {
    changes
        .into_iter()
        .enumerate()
        .flat_map(|(change, operations)| {
            operations
                .iter()
                .enumerate()
                .map(move |(operation, op)| (Origin { change, operation }, op))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_keeps_its_change_and_place_in_queue_order() {
        let changes: [&[char]; 3] = [&['a', 'b'], &[], &['c']];
        let found: Vec<(usize, usize, char)> = operations(changes)
            .map(|(o, &op)| (o.change, o.operation, op))
            .collect();
        assert_eq!(found, [(0, 0, 'a'), (0, 1, 'b'), (2, 0, 'c')]);
    }
}
