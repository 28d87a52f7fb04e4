//! What a simulated output did, for whoever inspects it (the self-test, the tests): a bounded
//! record of its changes, shared between the backend that writes it and its readers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// The last `CAP` changes of a simulated output, oldest first. Bounded so a box that runs on
/// simulated LEDs for months does not grow without end. Cheap to clone; clones share.
#[derive(Debug)]
pub struct ChangeLog<T, const CAP: usize>(Arc<Mutex<VecDeque<T>>>);

impl<T, const CAP: usize> Default for ChangeLog<T, CAP> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<T, const CAP: usize> Clone for ChangeLog<T, CAP> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Copy, const CAP: usize> ChangeLog<T, CAP> {
    pub(super) fn push(&self, change: T) {
        let mut log = crate::sync::lock(&self.0);
        if log.len() == CAP {
            log.pop_front();
        }
        log.push_back(change);
    }

    /// Every recorded change, oldest first.
    pub fn changes(&self) -> Vec<T> {
        crate::sync::lock(&self.0).iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::ChangeLog;

    #[test]
    fn keeps_the_newest_changes_up_to_its_capacity() {
        let log = ChangeLog::<u32, 3>::default();
        let reader = log.clone();
        for n in 0..5 {
            log.push(n);
        }
        assert_eq!(reader.changes(), [2, 3, 4]);
    }
}
