//! Replica selection among eligible backends: least outstanding requests (ties at random),
//! round robin, or weighted random. Pure functions over candidate lists, so they are tested
//! without a network.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Balance;

/// A candidate: its index in the cluster view, weight and in-flight requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub index: usize,
    pub weight: u32,
    pub outstanding: usize,
}

/// Picks one candidate. `rr` is the shared round-robin counter; `rand` a random number.
pub fn pick(
    strategy: Balance,
    candidates: &[Candidate],
    rr: &AtomicUsize,
    rand: u64,
) -> Option<usize> {
    let live: usize = candidates.iter().filter(|c| c.weight > 0).count();
    if live == 0 {
        return candidates.first().map(|c| c.index);
    }
    match strategy {
        Balance::RoundRobin => {
            // Weighted round robin: walk a virtual list where each candidate appears `weight` times.
            let total: u64 = candidates.iter().map(|c| c.weight as u64).sum();
            let slot = rr.fetch_add(1, Ordering::Relaxed) as u64 % total;
            Some(nth_by_weight(candidates, slot))
        }
        Balance::Random => {
            let total: u64 = candidates.iter().map(|c| c.weight as u64).sum();
            Some(nth_by_weight(candidates, rand % total))
        }
        Balance::LeastOutstanding => {
            // Lowest outstanding/weight; among ties, weighted random.
            let score = |c: &Candidate| (c.outstanding as u64 * 1_000_000) / c.weight.max(1) as u64;
            let best = candidates
                .iter()
                .filter(|c| c.weight > 0)
                .map(score)
                .min()?;
            let is_tie = |c: &&Candidate| c.weight > 0 && score(c) == best;
            let total: u64 = candidates
                .iter()
                .filter(is_tie)
                .map(|c| c.weight as u64)
                .sum();
            let mut slot = rand % total;
            for c in candidates.iter().filter(is_tie) {
                if slot < c.weight as u64 {
                    return Some(c.index);
                }
                slot -= c.weight as u64;
            }
            None
        }
    }
}

fn nth_by_weight(candidates: &[Candidate], mut slot: u64) -> usize {
    for c in candidates {
        if slot < c.weight as u64 {
            return c.index;
        }
        slot -= c.weight as u64;
    }
    candidates.last().map(|c| c.index).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(index: usize, weight: u32, outstanding: usize) -> Candidate {
        Candidate {
            index,
            weight,
            outstanding,
        }
    }

    #[test]
    fn least_outstanding_prefers_idle_and_breaks_ties_randomly() {
        let rr = AtomicUsize::new(0);
        let cs = [c(1, 1, 3), c(2, 1, 0), c(3, 1, 5)];
        for r in 0..10 {
            assert_eq!(pick(Balance::LeastOutstanding, &cs, &rr, r), Some(2));
        }
        let tie = [c(1, 1, 0), c(2, 1, 0)];
        let picks: std::collections::HashSet<_> = (0..10)
            .map(|r| pick(Balance::LeastOutstanding, &tie, &rr, r).unwrap())
            .collect();
        assert_eq!(picks.len(), 2);
    }

    #[test]
    fn weights_shape_round_robin_and_random() {
        let rr = AtomicUsize::new(0);
        let cs = [c(1, 1, 0), c(2, 3, 0)];
        let mut counts = [0; 3];
        for _ in 0..400 {
            counts[pick(Balance::RoundRobin, &cs, &rr, 0).unwrap()] += 1;
        }
        assert_eq!((counts[1], counts[2]), (100, 300));
        let mut counts = [0; 3];
        for r in 0..400 {
            counts[pick(Balance::Random, &cs, &rr, r).unwrap()] += 1;
        }
        assert_eq!((counts[1], counts[2]), (100, 300));
    }

    #[test]
    fn empty_and_zero_weight() {
        let rr = AtomicUsize::new(0);
        assert_eq!(pick(Balance::Random, &[], &rr, 1), None);
        assert_eq!(
            pick(Balance::LeastOutstanding, &[c(4, 0, 0)], &rr, 1),
            Some(4)
        );
        assert_eq!(
            pick(Balance::LeastOutstanding, &[c(4, 0, 0), c(5, 1, 9)], &rr, 1),
            Some(5)
        );
    }
}
