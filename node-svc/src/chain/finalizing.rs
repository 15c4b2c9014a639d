//! The chain's side of finality: votes in, checkpoints final, the main
//! chain moved onto a final checkpoint it does not contain, and this
//! node's own votes when it is a validator. The rules themselves are pure
//! ([`super::finality`], [`super::fork_choice`]); this applies them to the
//! tables inside the write transaction of the change that caused them, so
//! a vote, the finality it completes and the reorganisation it forces are
//! durable together.

use redb::ReadableTable;

use super::finality::{Added, Checked, Evidence, Vote};
use super::store::{self, FINAL, Finalized, HeaderRec, Tables, VOTED};
use super::{Applied, Chain, Hash, StoreError, state};

/// Evidence pairs one message may carry (and GetFinality answers with).
pub const MAX_EVIDENCE: usize = 256;

/// The checked votes and evidence of one message.
pub type VoteGroup = (Vec<Checked<Vote>>, Vec<Checked<Evidence>>);

/// What one message's votes did: a verdict each, and the votes and
/// evidence that were new (to relay).
#[derive(Debug, Default)]
pub struct GroupOutcome {
    pub verdicts: Vec<Added>,
    pub votes: Vec<Vote>,
    pub evidence: Vec<Evidence>,
}

impl Chain {
    /// Records checked votes and evidence, then applies what they made
    /// final. One verdict per vote; `Err` only for storage failures. (The
    /// actor commits several messages at once with
    /// [`Chain::accept_vote_groups`]; this is the one-message form.)
    #[cfg(test)]
    pub fn accept_votes(
        &mut self,
        votes: Vec<Checked<Vote>>,
        evidence: Vec<Checked<Evidence>>,
    ) -> Result<(Vec<Added>, Applied), StoreError> {
        let (mut groups, mut applied) = self.accept_vote_groups(vec![(votes, evidence)])?;
        let group = groups.pop().unwrap_or_default();
        applied.votes.splice(0..0, group.votes);
        applied.evidence.splice(0..0, group.evidence);
        Ok((group.verdicts, applied))
    }

    /// [`Chain::accept_votes`] for several messages at once, in one write
    /// transaction (one fsync for all: votes for a checkpoint arrive from
    /// every validator at about the same moment). Each group's verdicts and
    /// new votes come back apart, so each can be relayed past its sender;
    /// what they caused together (finality, a reorg, this node's own vote)
    /// is in the one [`Applied`].
    pub fn accept_vote_groups(&mut self, groups: Vec<VoteGroup>) -> Result<(Vec<GroupOutcome>, Applied), StoreError> {
        self.guarding_finality(|chain| chain.accept_vote_groups_once(groups))
    }

    fn accept_vote_groups_once(&mut self, groups: Vec<VoteGroup>) -> Result<(Vec<GroupOutcome>, Applied), StoreError> {
        let mut applied = Applied::default();
        let mut outcomes = Vec::with_capacity(groups.len());
        let tx = self.db()?.begin_write()?;
        {
            let mut t = Tables::open(&tx)?;
            for (votes, evidence) in groups {
                let mut mine = Applied::default();
                for e in evidence.into_iter().take(MAX_EVIDENCE) {
                    let e = e.into_inner();
                    if self.tally.convict(e.clone()) {
                        tracing::warn!(validator = %hex::encode(e.first.validator), checkpoint = e.first.checkpoint,
                            "evidence received: validator signed two blocks at one checkpoint; no longer counted");
                        t.evidence.insert(e.first.validator, store::encode_evidence(&e).as_slice())?;
                        mine.evidence.push(e);
                    }
                }
                let mut verdicts = Vec::with_capacity(votes.len());
                for vote in votes {
                    verdicts.push(self.record_vote(&mut t, vote.into_inner(), &mut mine)?);
                }
                outcomes.push(GroupOutcome { verdicts, votes: mine.votes, evidence: mine.evidence });
            }
            self.advance_finality(&mut t, &mut applied)?;
            if applied.finalized.is_some() {
                self.vote_duty(&mut t, &mut applied)?;
            }
        }
        tx.commit()?;
        Ok((outcomes, applied))
    }

    /// Adds one checked vote to the tally and the tables.
    fn record_vote(&mut self, t: &mut Tables<'_>, vote: Vote, applied: &mut Applied) -> Result<Added, StoreError> {
        let added = self.tally.add(vote.clone());
        match &added {
            Added::New => {
                t.votes.insert((vote.checkpoint, vote.validator), vote.encode().as_slice())?;
                applied.votes.push(vote);
            }
            Added::Equivocation(e) => {
                tracing::warn!(validator = %hex::encode(vote.validator), checkpoint = vote.checkpoint,
                    "validator equivocated (two blocks at one checkpoint): evidence kept, no longer counted");
                t.evidence.insert(vote.validator, store::encode_evidence(e).as_slice())?;
                applied.evidence.push((**e).clone());
            }
            Added::Known | Added::OutOfWindow | Added::Convicted => {}
        }
        Ok(added)
    }

    /// After blocks or votes changed something: finality may advance, and
    /// a validator may owe a vote.
    pub(super) fn after_change(&mut self, t: &mut Tables<'_>, applied: &mut Applied) -> Result<(), StoreError> {
        if !self.params.finality.enabled() {
            return Ok(());
        }
        self.follow_tip(t)?;
        self.advance_finality(t, applied)?;
        self.vote_duty(t, applied)
    }

    /// Moves the tally's window with the main tip, deleting the votes that
    /// fell out of it.
    fn follow_tip(&mut self, t: &mut Tables<'_>) -> Result<(), StoreError> {
        let Some(tip) = t.header(&t.tip_hash()?)? else { return Ok(()) };
        for key in self.tally.set_horizon(tip.height / self.params.finality.checkpoint_interval.max(1)) {
            t.votes.remove(key)?;
        }
        Ok(())
    }

    /// Finalizes the highest checkpoint with a quorum whose block is
    /// stored and descends from the current final one; then makes sure the
    /// main chain contains it.
    fn advance_finality(&mut self, t: &mut Tables<'_>, applied: &mut Applied) -> Result<(), StoreError> {
        for (cp, hash) in self.tally.quorums(&self.params.finality) {
            let Some(header) = t.header(&hash)? else {
                applied.missing_final.get_or_insert(hash);
                continue;
            };
            let current = self.finalized;
            if !self.descends(t, &header, &current)? {
                tracing::error!(
                    checkpoint = cp, block = %hex::encode(hash), final_block = %hex::encode(self.finalized.hash),
                    "a quorum voted for a block that does not contain the final checkpoint: more than a third \
                     of the validators broke the rules; not followed"
                );
                continue;
            }
            self.tally.finalize(cp);
            self.finalized = Finalized { height: header.height, hash };
            t.meta.insert(FINAL, hash.as_slice())?;
            let below: Vec<(u64, [u8; 32])> =
                t.votes.range(..(cp, [0u8; 32]))?.map(|e| e.map(|(k, _)| k.value())).collect::<Result<_, _>>()?;
            for key in below {
                t.votes.remove(key)?;
            }
            tracing::info!(checkpoint = cp, height = header.height, block = %hex::encode(hash), "checkpoint final");
            applied.finalized = Some(self.finalized);
            if applied.missing_final == Some(hash) {
                applied.missing_final = None;
            }
            self.adopt_final(t, applied)?;
            self.follow_tip(t)?;
            break;
        }
        Ok(())
    }

    /// True when `header`'s chain contains the block `f`.
    fn descends(&mut self, t: &Tables<'_>, header: &HeaderRec, f: &Finalized) -> Result<bool, StoreError> {
        let mut cur = *header;
        while cur.height > f.height {
            cur = match self.headers.get(&cur.prev) {
                Some(h) => h,
                None => match t.header(&cur.prev)? {
                    Some(h) => h,
                    None => return Ok(false),
                },
            };
        }
        Ok(cur.height == f.height && cur.hash == f.hash)
    }

    /// Moves the main chain onto the final checkpoint when it does not
    /// contain it: to the stored chain with the most work among those that
    /// do ("most work among chains that contain the final checkpoint"),
    /// whatever the work of the one it leaves.
    fn adopt_final(&mut self, t: &mut Tables<'_>, applied: &mut Applied) -> Result<(), StoreError> {
        let f = self.finalized;
        if t.main.get(f.height)?.is_some_and(|h| h.value() == f.hash.as_slice()) {
            return Ok(());
        }
        let side: Vec<(u64, Hash)> = t
            .side
            .range((f.height + 1, [].as_slice())..)?
            .map(|e| {
                let (k, _) = e?;
                let (height, hash) = k.value();
                Ok((height, store::hash_of(hash)?))
            })
            .collect::<Result<_, StoreError>>()?;
        let mut best = (t.work_of(&f.hash)?, f.hash);
        for (_, hash) in side {
            let work = t.work_of(&hash)?;
            if work > best.0
                && let Some(h) = t.header(&hash)?
                && self.descends(t, &h, &f)?
            {
                best = (work, hash);
            }
        }
        let block =
            t.block(&best.1)?.ok_or_else(|| StoreError::Inconsistent("a final branch block is missing".into()))?;
        let tip_hash = t.tip_hash()?;
        let sw = state::path(t, &block, &tip_hash)?;
        let undos = match state::check(t, &sw)? {
            Ok(undos) => undos,
            Err((first_bad, error)) => {
                tracing::error!(block = %hex::encode(sw.added[first_bad].hash), %error,
                    "the final branch breaks the nonce rule: more than a third of the validators voted for an \
                     invalid chain; the main chain stays where it is");
                return Ok(());
            }
        };
        let reorg = state::apply(t, &sw, undos, &self.genesis.hash)?;
        tracing::warn!(
            depth = reorg.removed.len(), new_tip = %hex::encode(block.hash), new_height = block.index,
            "main chain moved onto the final checkpoint"
        );
        if !reorg.removed.is_empty() {
            applied.reorgs.push(reorg);
        }
        t.meta.insert(super::TIP, block.hash.as_slice())?;
        applied.new_tip = Some(block);
        Ok(())
    }

    /// A validator signs the checkpoint its main chain has buried
    /// `vote_depth` deep, once: never a checkpoint at or below one it
    /// signed before (so never two blocks for one checkpoint), nor one
    /// already final.
    fn vote_duty(&mut self, t: &mut Tables<'_>, applied: &mut Applied) -> Result<(), StoreError> {
        let Some(key) = self.validator.clone() else { return Ok(()) };
        let tip_hash = t.tip_hash()?;
        let Some(tip) = t.header(&tip_hash)? else { return Ok(()) };
        let Some(cp) = self.params.finality.due_checkpoint(tip.height) else { return Ok(()) };
        if cp <= self.voted || cp <= self.tally.final_checkpoint() {
            return Ok(());
        }
        let height = cp * self.params.finality.checkpoint_interval;
        let Some(hash) = t.main.get(height)?.map(|h| store::hash_of(h.value())).transpose()? else { return Ok(()) };
        let vote = Vote::sign(&key, &self.genesis.hash, &self.params.finality, cp, hash).signed_here();
        self.voted = cp;
        t.meta.insert(VOTED, cp.to_be_bytes().as_slice())?;
        tracing::debug!(checkpoint = cp, height, block = %hex::encode(hash), "signed a checkpoint");
        self.record_vote(t, vote.into_inner(), applied)?;
        self.advance_finality(t, applied)
    }
}
