//! Finality votes on top of proof of work, in the spirit of Casper FFG over
//! a PoW chain: a validator set fixed by genesis signs checkpoints (every
//! `checkpoint_interval`-th block of its main chain, once `vote_depth`
//! blocks deep), and a checkpoint with votes from more than two thirds of
//! the validators is final: fork choice never leaves it again.
//!
//! A vote's signed encoding (integers big-endian) names the network, so a
//! vote is valid on one chain only:
//!
//! ```text
//! "p2p.node.v1.Vote\0" | genesis (32) | validator (32) | checkpoint u64 | height u64 | block hash (32)
//! ```
//!
//! Everything here is pure: [`Tally`] is the bookkeeping of votes and
//! evidence; the chain applies it to its tables and its fork choice.

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use super::block::Hash;

/// Domain separation for vote signatures.
pub const VOTE_DOMAIN: &[u8] = b"p2p.node.v1.Vote\0";
/// Validators a genesis may name.
pub const MAX_VALIDATORS: usize = 256;
/// Checkpoints below the tip's whose votes are kept (validators vote near
/// their tip, so older votes can no longer make a quorum): memory stays
/// within validators x (window + lead), however long finality stalls, and
/// finality resumes whenever a quorum votes again.
pub const VOTE_WINDOW: u64 = 256;
/// Checkpoints beyond the tip's whose votes are kept (a peer slightly
/// ahead); farther ones are fetched again (GetFinality) once we get there,
/// so a validator cannot fill memory with votes for far-off checkpoints.
pub const VOTE_LEAD: u64 = 16;

/// The finality rules a genesis commits to. An empty validator set turns
/// finality off: plain proof of work.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FinalityParams {
    /// ed25519 public keys, sorted and distinct.
    pub validators: Vec<[u8; 32]>,
    /// A checkpoint every this many blocks (heights K, 2K, ...).
    pub checkpoint_interval: u64,
    /// A validator votes for a checkpoint once it is this many blocks deep.
    pub vote_depth: u64,
}

impl FinalityParams {
    pub fn enabled(&self) -> bool {
        !self.validators.is_empty() && self.checkpoint_interval > 0
    }

    /// Normalises the set (sorted, distinct) and checks the bounds.
    pub fn new(mut validators: Vec<[u8; 32]>, checkpoint_interval: u64, vote_depth: u64) -> Result<Self, String> {
        validators.sort_unstable();
        validators.dedup();
        if validators.len() > MAX_VALIDATORS {
            return Err(format!("{} validators named, at most {MAX_VALIDATORS} allowed", validators.len()));
        }
        for v in &validators {
            VerifyingKey::from_bytes(v)
                .map_err(|e| format!("validator {} is not an ed25519 key: {e}", hex::encode(v)))?;
        }
        if !validators.is_empty() && checkpoint_interval == 0 {
            return Err("the checkpoint interval must be at least 1 block".into());
        }
        Ok(FinalityParams { validators, checkpoint_interval, vote_depth })
    }

    /// Votes that make a checkpoint final: more than two thirds.
    pub fn quorum(&self) -> usize {
        self.validators.len() * 2 / 3 + 1
    }

    pub fn is_validator(&self, key: &[u8; 32]) -> bool {
        self.validators.binary_search(key).is_ok()
    }

    /// The checkpoint a validator votes for when its main tip is at
    /// `tip_height`: the highest one at least `vote_depth` deep.
    pub fn due_checkpoint(&self, tip_height: u64) -> Option<u64> {
        if !self.enabled() {
            return None;
        }
        let deep = tip_height.checked_sub(self.vote_depth)?;
        let cp = deep / self.checkpoint_interval;
        (cp > 0).then_some(cp)
    }

    /// Part of the description genesis commits to.
    pub fn describe(&self) -> String {
        if !self.enabled() {
            return "finality=off".into();
        }
        let keys: Vec<String> = self.validators.iter().map(hex::encode).collect();
        format!(
            "finality validators=[{}] checkpoint_interval={} vote_depth={}",
            keys.join(","),
            self.checkpoint_interval,
            self.vote_depth
        )
    }
}

/// One validator's signed vote for the block at a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Vote {
    pub validator: [u8; 32],
    pub checkpoint: u64,
    pub height: u64,
    pub hash: Hash,
    pub signature: [u8; 64],
}

/// Why a vote is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    #[error("rule vote-validator: {0} is not a validator of this network")]
    NotAValidator(String),
    #[error("rule vote-checkpoint: checkpoint {checkpoint} is at height {want}, the vote says {height}")]
    WrongHeight { checkpoint: u64, height: u64, want: u64 },
    #[error("rule vote-signature: the signature does not verify for validator {0}")]
    BadSignature(String),
    #[error("rule vote-finality: this network has no validators (finality is off)")]
    FinalityOff,
}

impl Vote {
    /// The bytes the signature covers on the network with `genesis`.
    pub fn signing_bytes(&self, genesis: &Hash) -> Vec<u8> {
        let mut out = Vec::with_capacity(VOTE_DOMAIN.len() + 32 + 32 + 8 + 8 + 32);
        out.extend_from_slice(VOTE_DOMAIN);
        out.extend_from_slice(genesis);
        out.extend_from_slice(&self.validator);
        out.extend_from_slice(&self.checkpoint.to_be_bytes());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out
    }

    /// `key`'s vote for block `hash` as checkpoint `checkpoint`.
    pub fn sign(key: &SigningKey, genesis: &Hash, params: &FinalityParams, checkpoint: u64, hash: Hash) -> Self {
        let mut v = Vote {
            validator: key.verifying_key().to_bytes(),
            checkpoint,
            height: checkpoint.saturating_mul(params.checkpoint_interval),
            hash,
            signature: [0; 64],
        };
        v.signature = key.sign(&v.signing_bytes(genesis)).to_bytes();
        v
    }

    /// Every check that needs nothing but the vote and the rules.
    pub fn check(&self, genesis: &Hash, params: &FinalityParams) -> Result<(), VoteError> {
        if !params.enabled() {
            return Err(VoteError::FinalityOff);
        }
        if !params.is_validator(&self.validator) {
            return Err(VoteError::NotAValidator(hex::encode(self.validator)));
        }
        let want = self.checkpoint.saturating_mul(params.checkpoint_interval);
        if self.checkpoint == 0 || self.height != want {
            return Err(VoteError::WrongHeight { checkpoint: self.checkpoint, height: self.height, want });
        }
        let key = VerifyingKey::from_bytes(&self.validator)
            .map_err(|_| VoteError::NotAValidator(hex::encode(self.validator)))?;
        key.verify_strict(&self.signing_bytes(genesis), &ed25519_dalek::Signature::from_bytes(&self.signature))
            .map_err(|_| VoteError::BadSignature(hex::encode(self.validator)))
    }

    /// Bytes of a stored vote (signature, checkpoint and height are fixed
    /// size; the validator is the key it is stored under).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 8 + 8 + 32 + 64);
        out.extend_from_slice(&self.validator);
        out.extend_from_slice(&self.checkpoint.to_be_bytes());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.signature);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 32 + 8 + 8 + 32 + 64 {
            return None;
        }
        Some(Vote {
            validator: bytes[0..32].try_into().ok()?,
            checkpoint: u64::from_be_bytes(bytes[32..40].try_into().ok()?),
            height: u64::from_be_bytes(bytes[40..48].try_into().ok()?),
            hash: bytes[48..80].try_into().ok()?,
            signature: bytes[80..144].try_into().ok()?,
        })
    }
}

/// A vote or evidence whose every rule, signatures included, was checked:
/// the only kind the chain takes, so its thread never verifies a
/// signature a peer sent (that is done before, off the chain's thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked<T>(T);

impl<T> Checked<T> {
    pub fn get(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl Vote {
    /// [`Vote::check`], kept as proof.
    pub fn verify(self, genesis: &Hash, params: &FinalityParams) -> Result<Checked<Vote>, VoteError> {
        self.check(genesis, params)?;
        Ok(Checked(self))
    }

    /// A vote this node just signed itself.
    pub(crate) fn signed_here(self) -> Checked<Vote> {
        Checked(self)
    }
}

/// Two votes of one validator for different blocks at one checkpoint:
/// proof that it broke the rules, which anyone can check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub first: Vote,
    pub second: Vote,
}

impl Evidence {
    /// [`Evidence::convicts`], kept as proof.
    pub fn verify(self, genesis: &Hash, params: &FinalityParams) -> Option<Checked<Evidence>> {
        self.convicts(genesis, params).then_some(Checked(self))
    }

    /// True when the pair really convicts its validator.
    pub fn convicts(&self, genesis: &Hash, params: &FinalityParams) -> bool {
        self.first.validator == self.second.validator
            && self.first.checkpoint == self.second.checkpoint
            && self.first.hash != self.second.hash
            && self.first.check(genesis, params).is_ok()
            && self.second.check(genesis, params).is_ok()
    }
}

/// What adding a (checked) vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// A new vote, counted.
    New,
    /// Already known (or for a checkpoint at or below the final one).
    Known,
    /// For a checkpoint outside the window kept (far below or ahead of the
    /// tip): not kept now, but worth taking again once the tip is there.
    OutOfWindow,
    /// The validator had voted for another block at this checkpoint: the
    /// pair is the evidence, the validator is no longer counted.
    Equivocation(Box<Evidence>),
    /// From a validator already convicted: kept out of the count.
    Convicted,
}

/// The votes above the final checkpoint, and the evidence: pure
/// bookkeeping, persisted by the chain.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// checkpoint -> validator -> vote.
    votes: BTreeMap<u64, HashMap<[u8; 32], Vote>>,
    /// Convicted validators and their evidence.
    evidence: BTreeMap<[u8; 32], Evidence>,
    /// The final checkpoint number (0: genesis only).
    final_checkpoint: u64,
    /// The checkpoint at the main tip's height (rounded down).
    horizon: u64,
}

impl Tally {
    /// Votes above `final_checkpoint`, with the main tip at checkpoint `horizon`.
    pub fn new(final_checkpoint: u64, horizon: u64) -> Self {
        Tally { final_checkpoint, horizon, ..Tally::default() }
    }

    pub fn final_checkpoint(&self) -> u64 {
        self.final_checkpoint
    }

    /// The lowest and highest checkpoints whose votes are kept.
    pub fn window(&self) -> (u64, u64) {
        let low = self.final_checkpoint.max(self.horizon.saturating_sub(VOTE_WINDOW));
        (low, self.horizon.saturating_add(VOTE_LEAD))
    }

    /// The main tip is now at checkpoint `horizon` (its height / K): forgets
    /// the votes that fell out of the window (below it, or ahead of it when
    /// the tip moved back) and returns their keys (the
    /// caller deletes them from storage). The final checkpoint's are kept.
    pub fn set_horizon(&mut self, horizon: u64) -> Vec<(u64, [u8; 32])> {
        self.horizon = horizon;
        let (low, high) = self.window();
        let justifying = self.votes.remove(&self.final_checkpoint);
        let mut keep = self.votes.split_off(&low);
        // The tip can also move back (a reorg onto a shorter, heavier chain).
        let ahead = keep.split_off(&high.saturating_add(1));
        let mut gone = std::mem::replace(&mut self.votes, keep);
        gone.extend(ahead);
        if let Some(j) = justifying {
            self.votes.insert(self.final_checkpoint, j);
        }
        gone.into_iter().flat_map(|(cp, m)| m.into_keys().map(move |v| (cp, v))).collect()
    }

    /// Adds a vote that passed [`Vote::check`]. Votes for the final
    /// checkpoint are kept (they justify it to joining nodes); older ones
    /// and ones outside the window are not.
    pub fn add(&mut self, vote: Vote) -> Added {
        if self.is_convicted(&vote.validator) {
            return Added::Convicted;
        }
        if vote.checkpoint < self.final_checkpoint {
            // Settled: nothing below the final checkpoint can change.
            return Added::Known;
        }
        let (low, high) = self.window();
        // The final checkpoint's own votes are kept (they justify it).
        if vote.checkpoint != self.final_checkpoint && (vote.checkpoint < low || vote.checkpoint > high) {
            return Added::OutOfWindow;
        }
        let at = self.votes.entry(vote.checkpoint).or_default();
        match at.get(&vote.validator) {
            Some(v) if v.hash == vote.hash => Added::Known,
            Some(v) => {
                let evidence = Evidence { first: v.clone(), second: vote };
                self.convict(evidence.clone());
                Added::Equivocation(Box::new(evidence))
            }
            None => {
                at.insert(vote.validator, vote);
                Added::New
            }
        }
    }

    /// Records evidence (checked by [`Evidence::convicts`]) learned from a
    /// peer or found here; true when it was new.
    pub fn convict(&mut self, evidence: Evidence) -> bool {
        let v = evidence.first.validator;
        if self.evidence.contains_key(&v) {
            return false;
        }
        self.evidence.insert(v, evidence);
        true
    }

    pub fn is_convicted(&self, validator: &[u8; 32]) -> bool {
        self.evidence.contains_key(validator)
    }

    pub fn evidence(&self) -> impl Iterator<Item = &Evidence> {
        self.evidence.values()
    }

    /// Each checkpoint above the final one that has a quorum, highest
    /// first, with the block it is for. Convicted validators do not count.
    pub fn quorums(&self, params: &FinalityParams) -> Vec<(u64, Hash)> {
        let need = params.quorum();
        let mut out = Vec::new();
        for (&cp, votes) in self.votes.range(self.final_checkpoint + 1..).rev() {
            let mut count: HashMap<Hash, usize> = HashMap::new();
            for v in votes.values().filter(|v| !self.is_convicted(&v.validator)) {
                *count.entry(v.hash).or_default() += 1;
            }
            if let Some((hash, _)) = count.into_iter().find(|(_, n)| *n >= need) {
                out.push((cp, hash));
            }
        }
        out
    }

    /// Checkpoint `cp` is final now: forget the votes below it.
    pub fn finalize(&mut self, cp: u64) {
        if cp > self.final_checkpoint {
            self.final_checkpoint = cp;
            self.votes = self.votes.split_off(&cp);
        }
    }

    /// The votes at one checkpoint.
    pub fn votes_at(&self, cp: u64) -> Vec<Vote> {
        let mut v: Vec<Vote> = self.votes.get(&cp).map(|m| m.values().cloned().collect()).unwrap_or_default();
        v.sort_by_key(|a| a.validator);
        v
    }

    /// The checkpoints with votes, lowest first.
    pub fn checkpoints(&self) -> Vec<u64> {
        self.votes.keys().copied().collect()
    }

    /// Votes held, for the bound tests.
    pub fn len(&self) -> usize {
        self.votes.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const G: Hash = [7; 32];

    fn keys(n: u8) -> Vec<SigningKey> {
        (1..=n).map(|i| SigningKey::from_bytes(&[i; 32])).collect()
    }

    fn params_for(keys: &[SigningKey]) -> FinalityParams {
        FinalityParams::new(keys.iter().map(|k| k.verifying_key().to_bytes()).collect(), 10, 2).unwrap()
    }

    #[test]
    fn quorum_is_more_than_two_thirds() {
        for (n, q) in [(1, 1), (2, 2), (3, 3), (4, 3), (5, 4), (6, 5), (7, 5), (16, 11), (100, 67)] {
            let p = FinalityParams::new(keys(n).iter().map(|k| k.verifying_key().to_bytes()).collect(), 1, 0).unwrap();
            assert_eq!(p.quorum(), q, "{n} validators");
            assert!(3 * p.quorum() > 2 * n as usize && 3 * (p.quorum() - 1) <= 2 * n as usize);
        }
    }

    #[test]
    fn a_vote_verifies_only_as_signed_for_its_network_and_checkpoint() {
        let ks = keys(4);
        let p = params_for(&ks);
        let v = Vote::sign(&ks[0], &G, &p, 3, [9; 32]);
        assert_eq!(v.height, 30);
        assert_eq!(v.check(&G, &p), Ok(()));
        assert!(matches!(v.check(&[8; 32], &p), Err(VoteError::BadSignature(_))), "another network");
        let moved = Vote { hash: [1; 32], ..v.clone() };
        assert!(matches!(moved.check(&G, &p), Err(VoteError::BadSignature(_))));
        let wrong_height = Vote { height: 31, ..v.clone() };
        assert!(matches!(wrong_height.check(&G, &p), Err(VoteError::WrongHeight { .. })));
        let stranger = Vote::sign(&SigningKey::from_bytes(&[99; 32]), &G, &p, 3, [9; 32]);
        assert!(matches!(stranger.check(&G, &p), Err(VoteError::NotAValidator(_))));
        assert_eq!(v.check(&G, &FinalityParams::default()), Err(VoteError::FinalityOff));
        assert_eq!(Vote::decode(&v.encode()), Some(v));
    }

    #[test]
    fn due_checkpoint_waits_for_depth() {
        let p = params_for(&keys(4)); // every 10 blocks, 2 deep
        assert_eq!(p.due_checkpoint(0), None);
        assert_eq!(p.due_checkpoint(11), None);
        assert_eq!(p.due_checkpoint(12), Some(1));
        assert_eq!(p.due_checkpoint(21), Some(1));
        assert_eq!(p.due_checkpoint(22), Some(2));
        assert_eq!(FinalityParams::default().due_checkpoint(1000), None);
    }

    #[test]
    fn three_of_four_finalize_two_do_not_and_an_equivocator_stops_counting() {
        let ks = keys(4);
        let p = params_for(&ks);
        let mut t = Tally::new(0, 0);
        assert_eq!(t.add(Vote::sign(&ks[0], &G, &p, 1, [1; 32])), Added::New);
        assert_eq!(t.add(Vote::sign(&ks[0], &G, &p, 1, [1; 32])), Added::Known);
        assert_eq!(t.add(Vote::sign(&ks[1], &G, &p, 1, [1; 32])), Added::New);
        assert!(t.quorums(&p).is_empty(), "two of four");
        // The third validator signs both sides: convicted, not counted.
        assert_eq!(t.add(Vote::sign(&ks[2], &G, &p, 1, [1; 32])), Added::New);
        assert_eq!(t.quorums(&p), vec![(1, [1; 32])]);
        let e = match t.add(Vote::sign(&ks[2], &G, &p, 1, [2; 32])) {
            Added::Equivocation(e) => e,
            other => panic!("{other:?}"),
        };
        assert!(e.convicts(&G, &p));
        assert!(t.quorums(&p).is_empty(), "the equivocator no longer counts");
        assert_eq!(t.add(Vote::sign(&ks[2], &G, &p, 2, [3; 32])), Added::Convicted);
        assert_eq!(t.add(Vote::sign(&ks[3], &G, &p, 1, [1; 32])), Added::New);
        assert_eq!(t.quorums(&p), vec![(1, [1; 32])]);
        t.finalize(1);
        assert!(t.quorums(&p).is_empty(), "nothing above the final checkpoint");
        assert_eq!(t.votes_at(1).len(), 4, "the justifying votes are kept");
        t.set_horizon(1); // the tip is at checkpoint 1
        assert_eq!(t.add(Vote::sign(&ks[0], &G, &p, 1 + VOTE_LEAD + 1, [5; 32])), Added::OutOfWindow, "too far ahead");
        assert_eq!(t.add(Vote::sign(&ks[0], &G, &p, 1 + VOTE_LEAD, [5; 32])), Added::New);
        // The tip moves far on without finality: old votes go, new ones count.
        let gone = t.set_horizon(1000);
        assert_eq!(gone, vec![(1 + VOTE_LEAD, ks[0].verifying_key().to_bytes())]);
        assert_eq!(t.votes_at(1).len(), 4, "the final checkpoint's votes stay");
        for k in [&ks[0], &ks[1], &ks[3]] {
            assert_eq!(t.add(Vote::sign(k, &G, &p, 1000, [6; 32])), Added::New);
        }
        assert_eq!(t.quorums(&p), vec![(1000, [6; 32])], "finality resumes after a long stall");
    }

    #[test]
    fn a_vote_too_far_ahead_is_taken_once_the_tip_gets_there_and_one_below_the_final_checkpoint_never() {
        let ks = keys(4);
        let p = params_for(&ks);
        let mut t = Tally::new(2, 2);
        let ahead = Vote::sign(&ks[0], &G, &p, 2 + VOTE_LEAD + 5, [1; 32]);
        assert_eq!(t.add(ahead.clone()), Added::OutOfWindow);
        t.set_horizon(2 + 10);
        assert_eq!(t.add(ahead), Added::New);
        assert_eq!(t.add(Vote::sign(&ks[0], &G, &p, 1, [1; 32])), Added::Known, "below the final checkpoint");
        assert_eq!(
            t.add(Vote::sign(&ks[0], &G, &p, 2, [1; 32])),
            Added::New,
            "the final checkpoint's own votes are kept"
        );
    }

    #[test]
    fn evidence_must_be_two_valid_votes_for_different_blocks() {
        let ks = keys(4);
        let p = params_for(&ks);
        let a = Vote::sign(&ks[0], &G, &p, 1, [1; 32]);
        let b = Vote::sign(&ks[0], &G, &p, 1, [2; 32]);
        assert!(Evidence { first: a.clone(), second: b.clone() }.convicts(&G, &p));
        assert!(!Evidence { first: a.clone(), second: a.clone() }.convicts(&G, &p), "the same vote twice");
        let other = Vote::sign(&ks[1], &G, &p, 1, [2; 32]);
        assert!(!Evidence { first: a.clone(), second: other }.convicts(&G, &p), "two validators");
        let later = Vote::sign(&ks[0], &G, &p, 2, [2; 32]);
        assert!(!Evidence { first: a.clone(), second: later }.convicts(&G, &p), "two checkpoints");
        let forged = Vote { signature: [0; 64], ..b };
        assert!(!Evidence { first: a, second: forged }.convicts(&G, &p), "a forged second vote");
    }

    proptest! {
        /// Safety of the count: two different blocks can never both have a
        /// quorum at one checkpoint unless more than a third equivocated,
        /// and then those are convicted and neither counts them.
        #[test]
        fn two_blocks_never_both_final_at_one_checkpoint(
            n in 1u8..10,
            votes in proptest::collection::vec((0u8..10, 0u8..2), 0..40),
        ) {
            let ks = keys(n);
            let p = params_for(&ks);
            let mut t = Tally::new(0, 0);
            for (who, which) in votes {
                let k = &ks[usize::from(who) % ks.len()];
                t.add(Vote::sign(k, &G, &p, 1, [which; 32]));
            }
            let q = t.quorums(&p);
            prop_assert!(q.len() <= 1);
            // Whoever is counted voted once, for the quorum's block.
            if let Some((_, hash)) = q.first() {
                let counted = t.votes_at(1).into_iter().filter(|v| !t.is_convicted(&v.validator) && v.hash == *hash).count();
                prop_assert!(counted >= p.quorum());
            }
        }

        #[test]
        fn held_votes_stay_within_validators_times_window(
            steps in proptest::collection::vec((0u8..4, 0u64..2000, proptest::option::of(0u64..2000)), 0..300),
            final_cp in 0u64..500,
        ) {
            let ks = keys(4);
            let p = params_for(&ks);
            let mut t = Tally::new(final_cp, final_cp);
            for (who, cp, horizon) in steps {
                if let Some(h) = horizon {
                    t.set_horizon(h);
                }
                t.add(Vote::sign(&ks[usize::from(who)], &G, &p, cp.max(1), [1; 32]));
                let (low, high) = t.window();
                // The final checkpoint's votes (they justify it) and the window.
                prop_assert!(t.checkpoints().iter().all(|&c| c == final_cp || (c >= low && c <= high)));
                prop_assert!(t.len() as u64 <= 4 * (VOTE_WINDOW + VOTE_LEAD + 2));
            }
        }
    }
}
