//! Fork choice as a pure function: given the main chain's tip and a newly
//! stored block, which chain is the main one? (Finality will add a rule
//! here: a branch that reverts a final block is never chosen.)

use super::block::Hash;

/// What the fork-choice rule needs to know about a chain's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub hash: Hash,
    pub prev_hash: Hash,
    /// Cumulative work from genesis through this block.
    pub work: u128,
}

/// The decision for one new block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The main chain stays; the block sits on a side branch.
    Keep,
    /// The block extends the main chain's tip.
    Extend,
    /// The block's branch has more work and forks below the tip: switch.
    Reorg,
}

/// Most cumulative work wins; a branch needs strictly more work to replace
/// the main chain, so ties keep the block seen first.
pub fn choose(tip: &Head, candidate: &Head) -> Choice {
    if candidate.work <= tip.work {
        Choice::Keep
    } else if candidate.prev_hash == tip.hash {
        Choice::Extend
    } else {
        Choice::Reorg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(h: u8, prev: u8, work: u128) -> Head {
        Head { hash: [h; 32], prev_hash: [prev; 32], work }
    }

    #[test]
    fn the_documented_cases() {
        let tip = head(1, 0, 10);
        assert_eq!(choose(&tip, &head(2, 1, 11)), Choice::Extend);
        assert_eq!(choose(&tip, &head(3, 9, 11)), Choice::Reorg);
        assert_eq!(choose(&tip, &head(3, 9, 10)), Choice::Keep, "a tie keeps the first seen");
        assert_eq!(choose(&tip, &head(2, 1, 10)), Choice::Keep, "even a child needs more work");
    }

    proptest! {
        #[test]
        fn never_switches_to_less_or_equal_work(tip_work in any::<u128>(), cand_work in any::<u128>(), prev in any::<u8>()) {
            let tip = head(1, 0, tip_work);
            let cand = head(2, prev, cand_work);
            let c = choose(&tip, &cand);
            prop_assert_eq!(c == Choice::Keep, cand_work <= tip_work);
        }

        #[test]
        fn switching_is_never_mutual(a_work in any::<u128>(), b_work in any::<u128>()) {
            // Two competing heads: at most one of them beats the other.
            let a = head(1, 0, a_work);
            let b = head(2, 0, b_work);
            prop_assert!(choose(&a, &b) == Choice::Keep || choose(&b, &a) == Choice::Keep);
        }

        #[test]
        fn extend_exactly_when_the_parent_is_the_tip(prev in any::<u8>(), extra in 1u128..1000) {
            let tip = head(7, 0, 100);
            let c = choose(&tip, &head(8, prev, 100 + extra));
            prop_assert_eq!(c == Choice::Extend, prev == 7);
        }
    }
}
