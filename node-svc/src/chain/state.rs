//! The state the main chain implies: each sender's last confirmed nonce,
//! the index of confirmed transactions, and the undo records that take a
//! block back off the main chain. Moving the main chain (an extension or a
//! reorganisation) is planned ([`path`]), checked against the nonce rule
//! without writing anything ([`check`]), and only then applied ([`apply`]),
//! so a branch that breaks the rule never becomes the main chain and leaves
//! nothing behind.

use std::collections::HashMap;

use redb::ReadableTable;

use super::Reorg;
use super::block::{Block, Hash};
use super::store::{StoreError, Tables, hash_of};
use super::validate::BlockError;

/// The blocks leaving and joining the main chain.
#[derive(Debug)]
pub(super) struct Switch {
    /// The old main chain above the fork point, tip first.
    pub removed: Vec<Block>,
    /// The new branch above the fork point, lowest first (ends with the new tip).
    pub added: Vec<Block>,
}

/// One transaction's effect, to take it back: its sender and the sender's
/// last nonce before it.
pub(super) type UndoEntry = ([u8; 32], Option<u64>);

/// What [`check`] finds: every added block's undo records, or the position
/// in `added` of the first block that breaks the nonce rule, and why.
pub(super) type Checked = Result<Vec<Vec<UndoEntry>>, (usize, BlockError)>;

/// The blocks a switch to `new_tip` moves (`old_tip` is the main tip).
pub(super) fn path(t: &Tables<'_>, new_tip: &Block, old_tip: &Hash) -> Result<Switch, StoreError> {
    let missing = |what: &str| StoreError::Inconsistent(format!("{what} missing while moving the main chain"));
    let on_main = |b: &Block| -> Result<bool, StoreError> {
        Ok(t.main.get(b.index)?.is_some_and(|h| h.value() == b.hash.as_slice()))
    };
    let mut added = vec![new_tip.clone()];
    loop {
        let last = &added[added.len() - 1];
        let parent = t.block(&last.prev_hash)?.ok_or_else(|| missing("a branch block's parent"))?;
        if on_main(&parent)? {
            break;
        }
        added.push(parent);
    }
    added.reverse();
    let fork_height = added[0].index - 1;
    let mut removed = Vec::new();
    let mut cur = t.block(old_tip)?.ok_or_else(|| missing("the tip block"))?;
    while cur.index > fork_height {
        let prev = cur.prev_hash;
        removed.push(cur);
        cur = t.block(&prev)?.ok_or_else(|| missing("a main-chain block"))?;
    }
    Ok(Switch { removed, added })
}

fn decode_undo(bytes: &[u8]) -> Result<Vec<UndoEntry>, StoreError> {
    if !bytes.len().is_multiple_of(41) {
        return Err(StoreError::Inconsistent(format!("an undo record has {} bytes", bytes.len())));
    }
    Ok(bytes
        .chunks_exact(41)
        .map(|c| {
            let sender: [u8; 32] = c[..32].try_into().unwrap_or([0; 32]);
            let prev = (c[32] == 1).then(|| u64::from_be_bytes(c[33..41].try_into().unwrap_or([0; 8])));
            (sender, prev)
        })
        .collect())
}

fn encode_undo(entries: &[UndoEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 41);
    for (sender, prev) in entries {
        out.extend_from_slice(sender);
        out.push(u8::from(prev.is_some()));
        out.extend_from_slice(&prev.unwrap_or(0).to_be_bytes());
    }
    out
}

/// Whether the switch keeps every transaction's nonce above its sender's
/// last confirmed one, computed on an overlay (nothing is written). On
/// success, the undo records of the added blocks; otherwise the position
/// in `added` of the first block that breaks the rule, and why.
pub(super) fn check(t: &Tables<'_>, sw: &Switch) -> Result<Checked, StoreError> {
    let mut overlay: HashMap<[u8; 32], Option<u64>> = HashMap::new();
    let get = |overlay: &HashMap<[u8; 32], Option<u64>>, sender: &[u8; 32]| -> Result<Option<u64>, StoreError> {
        match overlay.get(sender) {
            Some(v) => Ok(*v),
            None => Ok(t.nonces.get(*sender)?.map(|v| v.value())),
        }
    };
    for b in &sw.removed {
        let undo = t.undo.get(b.hash)?.map(|v| decode_undo(v.value())).transpose()?.unwrap_or_default();
        for (sender, prev) in undo.into_iter().rev() {
            overlay.insert(sender, prev);
        }
    }
    let mut undos = Vec::with_capacity(sw.added.len());
    for (i, b) in sw.added.iter().enumerate() {
        let mut undo = Vec::with_capacity(b.transactions.len());
        for (index, tx) in b.transactions.iter().enumerate() {
            let last = get(&overlay, &tx.sender)?;
            if let Some(last) = last
                && tx.nonce <= last
            {
                let error = BlockError::StaleNonce { index, sender: hex::encode(tx.sender), nonce: tx.nonce, last };
                return Ok(Err((i, error)));
            }
            undo.push((tx.sender, last));
            overlay.insert(tx.sender, Some(tx.nonce));
        }
        undos.push(undo);
    }
    Ok(Ok(undos))
}

/// Applies a checked switch: nonces, undo records, the transaction index,
/// and which blocks are main and which side. Returns what moved, both
/// lists in height order.
pub(super) fn apply(
    t: &mut Tables<'_>,
    sw: &Switch,
    undos: Vec<Vec<UndoEntry>>,
    genesis: &Hash,
) -> Result<Reorg, StoreError> {
    let mut removed = Vec::with_capacity(sw.removed.len());
    for b in &sw.removed {
        let undo = t.undo.remove(b.hash)?.map(|v| decode_undo(v.value())).transpose()?.unwrap_or_default();
        for (sender, prev) in undo.into_iter().rev() {
            match prev {
                Some(n) => t.nonces.insert(sender, n)?,
                None => t.nonces.remove(sender)?,
            };
        }
        for id in b.tx_ids(genesis) {
            t.txs.remove(id)?;
        }
        if let Some(h) = t.main.remove(b.index)? {
            let h = hash_of(h.value())?;
            t.side.insert((b.index, h.as_slice()), ())?;
        }
        removed.push(b.hash);
    }
    let mut added = Vec::with_capacity(sw.added.len());
    for (b, undo) in sw.added.iter().zip(undos) {
        for tx in &b.transactions {
            t.nonces.insert(tx.sender, tx.nonce)?;
        }
        t.undo.insert(b.hash, encode_undo(&undo).as_slice())?;
        for (position, id) in b.tx_ids(genesis).into_iter().enumerate() {
            t.txs.insert(id, (b.hash, position as u32))?;
        }
        t.side.remove((b.index, b.hash.as_slice()))?;
        t.main.insert(b.index, b.hash.as_slice())?;
        added.push(b.hash);
    }
    removed.reverse();
    Ok(Reorg { removed, added })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_records_round_trip() {
        let entries = vec![([1u8; 32], None), ([2u8; 32], Some(7)), ([1u8; 32], Some(u64::MAX))];
        assert_eq!(decode_undo(&encode_undo(&entries)).unwrap(), entries);
        assert!(decode_undo(&[0; 40]).is_err());
    }
}
