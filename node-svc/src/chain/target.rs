//! Difficulty as a full 256-bit target: the compact form a header carries
//! (Bitcoin's nBits), the work a target stands for, and the rules that set
//! each block's target and earliest timestamp. Pure: no storage, no clock.
//!
//! - [`next_target`]: LWMA-1 (zawy12's linearly weighted moving average,
//!   N = [`LWMA_WINDOW`]): each of the last N solve times is weighted by its
//!   recency, so the target follows hash power within about N/2 blocks
//!   without oscillating; solve times are made positive and capped at 6T.
//! - [`median_time_past`]: a block must be later than the median of the 11
//!   before it (Bitcoin's rule), so no miner can drag time backwards.

use ruint::aliases::{U256, U512};

/// Blocks the difficulty average looks back over.
pub const LWMA_WINDOW: usize = 60;
/// Blocks whose median timestamp a new block must exceed.
pub const MTP_WINDOW: usize = 11;

/// Why a compact target is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("compact target {0:#010x} is negative")]
    Negative(u32),
    #[error("compact target {0:#010x} overflows 256 bits")]
    Overflow(u32),
    #[error("compact target {0:#010x} is zero")]
    Zero(u32),
}

/// The target a compact `bits` encodes (Bitcoin's `SetCompact`): a 3-byte
/// mantissa and a 1-byte base-256 exponent. Negative, zero and overflowing
/// encodings are refused, so every accepted `bits` names one target.
pub fn from_compact(bits: u32) -> Result<U256, CompactError> {
    let size = bits >> 24;
    let word = bits & 0x007f_ffff;
    if word != 0 && bits & 0x0080_0000 != 0 {
        return Err(CompactError::Negative(bits));
    }
    let target = if size <= 3 {
        U256::from(word >> (8 * (3 - size)))
    } else {
        if word != 0 && (size > 34 || (word > 0xff && size > 33) || (word > 0xffff && size > 32)) {
            return Err(CompactError::Overflow(bits));
        }
        U256::from(word) << (8 * (size as usize - 3))
    };
    if target.is_zero() {
        return Err(CompactError::Zero(bits));
    }
    Ok(target)
}

/// The compact form of `target` (Bitcoin's `GetCompact`); it may round the
/// target down (only 3 significant bytes are kept).
pub fn to_compact(target: U256) -> u32 {
    let mut size = target.bit_len().div_ceil(8) as u32;
    let mut compact: u32 = if size <= 3 {
        (target.to::<u64>() << (8 * (3 - size))) as u32
    } else {
        (target >> (8 * (size as usize - 3))).to::<u64>() as u32
    };
    // The mantissa's sign bit must stay clear: shift a byte into the exponent.
    if compact & 0x0080_0000 != 0 {
        compact >>= 8;
        size += 1;
    }
    compact | (size << 24)
}

/// A target rounded to what its compact form says (what a header carries).
pub fn round(target: U256) -> U256 {
    from_compact(to_compact(target)).unwrap_or(U256::from(1))
}

/// The expected number of hashes to find a block at `target`:
/// 2^256 / (target + 1), as Bitcoin computes it (`~t / (t + 1) + 1`).
pub fn work(target: U256) -> U256 {
    match target.checked_add(U256::from(1)) {
        Some(plus_one) => (!target / plus_one) + U256::from(1),
        // The all-ones target: every hash meets it.
        None => U256::from(1),
    }
}

/// Whether `hash`, read as a big-endian number, is at most `target`.
pub fn meets(hash: &[u8; 32], target: U256) -> bool {
    U256::from_be_bytes(*hash) <= target
}

/// The easiest target with `bits` leading zero bits required: 2^(256-bits) - 1
/// (how the CLI's `--difficulty-bits` names the network's limit).
pub fn target_for_leading_zeros(bits: u32) -> U256 {
    U256::MAX >> bits.min(255) as usize
}

/// What difficulty retargeting needs of a past block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Past {
    pub timestamp_ms: u64,
    pub target: U256,
}

/// The rules [`next_target`] applies (parts of the network's parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retarget {
    /// The easiest target allowed (and the target of the first blocks).
    pub limit: U256,
    /// The block time the average steers toward.
    pub block_time_ms: u64,
    /// False: every block uses `limit` (fixed difficulty, like regtest).
    pub enabled: bool,
}

/// The target of the block after `past` (its ancestors, oldest first, the
/// parent last): LWMA-1 over the last [`LWMA_WINDOW`] solve times, the limit
/// until there are that many. Deterministic integer arithmetic only.
pub fn next_target(rules: &Retarget, past: &[Past]) -> U256 {
    let n = LWMA_WINDOW;
    if !rules.enabled || past.len() < n + 1 {
        return rules.limit;
    }
    let window = &past[past.len() - (n + 1)..];
    let t = rules.block_time_ms.max(1);
    let mut previous = window[0].timestamp_ms;
    let mut weighted: u128 = 0;
    let mut sum_targets = U512::ZERO;
    for (j, block) in window[1..].iter().enumerate() {
        // Out-of-order timestamps count as 1 ms, so solve times are never
        // negative; long ones are capped at 6T to avoid oscillation.
        let this = block.timestamp_ms.max(previous.saturating_add(1));
        let solve = (this - previous).min(6 * t);
        previous = this;
        weighted += (j as u128 + 1) * u128::from(solve);
        sum_targets += U512::from(block.target);
    }
    // k normalises the weights: on-time blocks keep the average target.
    let k = (n as u128) * (n as u128 + 1) * u128::from(t) / 2;
    let next = sum_targets * U512::from(weighted) / (U512::from(n as u64) * U512::from(k));
    let limit = U512::from(rules.limit);
    let next = if next > limit { limit } else { next.max(U512::from(1)) };
    round(U256::from(next))
}

/// The median of the last (up to) [`MTP_WINDOW`] timestamps.
pub fn median_time_past(timestamps: &[u64]) -> u64 {
    let mut last: Vec<u64> = timestamps.iter().rev().take(MTP_WINDOW).copied().collect();
    if last.is_empty() {
        return 0;
    }
    last.sort_unstable();
    last[last.len() / 2]
}

#[cfg(test)]
mod tests;
