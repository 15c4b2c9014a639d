//! Fork choice as a pure function: given the main chain's tip and a newly
//! stored block, which chain is the main one? The most cumulative work
//! among the chains that contain the latest final checkpoint: a branch
//! that forks below it is refused whatever its work.

use ruint::aliases::U256;

use super::block::Hash;

/// The main chain's head, as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MainHead {
    pub hash: Hash,
    /// Cumulative work from genesis through the tip.
    pub work: U256,
    /// Height of the latest final checkpoint (0 without finality: genesis).
    pub final_height: u64,
}

/// A newly stored block, as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub parent: Hash,
    /// Cumulative work from genesis through this block.
    pub work: U256,
    /// Height of the last block the candidate's branch shares with the
    /// main chain (the parent's height when it extends the tip).
    pub fork_height: u64,
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
    /// The block's branch has more work but forks below the final
    /// checkpoint: it stays a side branch, whatever its work.
    RevertsFinal,
}

/// Most cumulative work wins; a branch needs strictly more work to replace
/// the main chain, so ties keep the block seen first; and no branch that
/// leaves the final checkpoint wins at all.
pub fn choose(tip: &MainHead, candidate: &Candidate) -> Choice {
    if candidate.work <= tip.work {
        Choice::Keep
    } else if candidate.fork_height < tip.final_height {
        Choice::RevertsFinal
    } else if candidate.parent == tip.hash {
        Choice::Extend
    } else {
        Choice::Reorg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(h: u8, work: u128) -> MainHead {
        MainHead { hash: [h; 32], work: U256::from(work), final_height: 0 }
    }

    fn block(parent: u8, work: u128) -> Candidate {
        Candidate { parent: [parent; 32], work: U256::from(work), fork_height: 0 }
    }

    #[test]
    fn the_documented_cases() {
        let tip = head(1, 10);
        assert_eq!(choose(&tip, &block(1, 11)), Choice::Extend);
        assert_eq!(choose(&tip, &block(9, 11)), Choice::Reorg);
        assert_eq!(choose(&tip, &block(9, 10)), Choice::Keep, "a tie keeps the first seen");
        assert_eq!(choose(&tip, &block(1, 10)), Choice::Keep, "even a child needs more work");
    }

    #[test]
    fn a_branch_forking_below_the_final_checkpoint_never_wins() {
        let tip = MainHead { final_height: 20, ..head(1, 10) };
        let fork = |at: u64, work: u128| Candidate { fork_height: at, ..block(9, work) };
        assert_eq!(choose(&tip, &fork(19, u128::MAX)), Choice::RevertsFinal, "any amount of work");
        assert_eq!(choose(&tip, &fork(20, 11)), Choice::Reorg, "forking at the final block keeps it");
        assert_eq!(choose(&tip, &fork(25, 11)), Choice::Reorg);
        assert_eq!(choose(&tip, &fork(19, 10)), Choice::Keep, "less work is simply kept");
        let child = Candidate { fork_height: 30, ..block(1, 11) };
        assert_eq!(choose(&MainHead { final_height: 20, ..head(1, 10) }, &child), Choice::Extend);
    }

    proptest! {
        #[test]
        fn never_switches_to_less_or_equal_work(tip_work in any::<u128>(), cand_work in any::<u128>(), prev in any::<u8>()) {
            let c = choose(&head(1, tip_work), &block(prev, cand_work));
            prop_assert_eq!(c == Choice::Keep, cand_work <= tip_work);
        }

        #[test]
        fn switching_is_never_mutual(a_work in any::<u128>(), b_work in any::<u128>()) {
            // Two competing branches: at most one of them beats the other.
            let a_beats_b = choose(&head(2, b_work), &block(0, a_work)) != Choice::Keep;
            let b_beats_a = choose(&head(1, a_work), &block(0, b_work)) != Choice::Keep;
            prop_assert!(!(a_beats_b && b_beats_a));
        }

        /// Whatever the work, a chosen branch keeps the final checkpoint:
        /// it forks at or above it.
        #[test]
        fn a_chosen_branch_always_contains_the_final_checkpoint(
            tip_work in any::<u128>(), cand_work in any::<u128>(), final_height in 0u64..1000, fork_height in 0u64..1000,
        ) {
            let tip = MainHead { final_height, ..head(1, tip_work) };
            let c = choose(&tip, &Candidate { fork_height, ..block(2, cand_work) });
            if matches!(c, Choice::Extend | Choice::Reorg) {
                prop_assert!(fork_height >= final_height);
                prop_assert!(cand_work > tip_work);
            }
            prop_assert_eq!(c == Choice::RevertsFinal, cand_work > tip_work && fork_height < final_height);
        }

        #[test]
        fn extend_exactly_when_the_parent_is_the_tip(prev in any::<u8>(), extra in 1u128..1000) {
            let c = choose(&head(7, 100), &block(prev, 100 + extra));
            prop_assert_eq!(c == Choice::Extend, prev == 7);
        }
    }
}
