use proptest::prelude::*;
use rand::{Rng, SeedableRng};

use super::*;

fn f64_of(x: U256) -> f64 {
    x.as_limbs().iter().enumerate().map(|(i, limb)| (*limb as f64) * 2f64.powi(64 * i as i32)).sum()
}

#[test]
fn compact_targets_decode_as_bitcoin_decodes_them() {
    // Bitcoin's genesis difficulty.
    let t = from_compact(0x1d00_ffff).unwrap();
    assert_eq!(t, U256::from(0xffffu64) << 208);
    assert_eq!(to_compact(t), 0x1d00_ffff);
    assert_eq!(from_compact(0x0412_3456).unwrap(), U256::from(0x1234_5600u64));
    assert_eq!(from_compact(0x0300_0001).unwrap(), U256::from(1u64));
    assert_eq!(from_compact(0x0492_3456), Err(CompactError::Negative(0x0492_3456)));
    assert_eq!(from_compact(0x0100_3456), Err(CompactError::Zero(0x0100_3456)));
    assert_eq!(from_compact(0xff12_3456), Err(CompactError::Overflow(0xff12_3456)));
    assert_eq!(from_compact(0), Err(CompactError::Zero(0)));
}

#[test]
fn work_is_two_to_the_256_over_target_plus_one() {
    assert_eq!(work(U256::MAX), U256::from(1u64));
    assert_eq!(work(U256::MAX >> 8usize), U256::from(256u64));
    assert_eq!(work(target_for_leading_zeros(16)), U256::from(65536u64));
    // A harder target is more work.
    assert!(work(target_for_leading_zeros(20)) > work(target_for_leading_zeros(19)));
}

#[test]
fn the_median_time_past_is_the_middle_of_the_last_eleven() {
    assert_eq!(median_time_past(&[]), 0);
    assert_eq!(median_time_past(&[5]), 5);
    let ts: Vec<u64> = (1..=20).collect();
    assert_eq!(median_time_past(&ts), 15, "the last 11 are 10..=20");
    assert_eq!(median_time_past(&[9, 1, 7, 3, 5]), 5, "out of order: the median, not the last");
}

proptest! {
    #[test]
    fn a_compact_form_names_one_target_and_round_trips(target in any::<[u8; 32]>()) {
        let t = U256::from_be_bytes(target);
        prop_assume!(!t.is_zero());
        let bits = to_compact(t);
        let back = from_compact(bits).unwrap();
        prop_assert!(back <= t, "rounding only ever goes down");
        prop_assert_eq!(to_compact(back), bits);
        prop_assert_eq!(round(back), back);
    }

    #[test]
    fn lwma_stays_within_the_limit_and_above_zero(seed in any::<u64>(), spacing in 1u64..100_000) {
        let rules = Retarget { limit: target_for_leading_zeros(8), block_time_ms: 10_000, enabled: true };
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut past = vec![Past { timestamp_ms: 1_000_000, target: rules.limit }];
        for _ in 0..200 {
            let t = next_target(&rules, &past);
            prop_assert!(t <= rules.limit && !t.is_zero());
            let last = past.last().unwrap().timestamp_ms;
            // Timestamps that even go backwards sometimes.
            let ts = (last + rng.random_range(0..2 * spacing)).saturating_sub(rng.random_range(0..spacing / 2 + 1));
            past.push(Past { timestamp_ms: ts, target: t });
        }
    }
}

/// Mines `blocks` blocks with a miner of `rate(height)` hashes per ms: each
/// solve time is drawn from the exponential distribution a PoW search has
/// (mean work / rate), with a seeded generator.
fn simulate(rules: &Retarget, blocks: usize, seed: u64, rate: impl Fn(usize) -> f64) -> Vec<Past> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut past = vec![Past { timestamp_ms: 1_700_000_000_000, target: rules.limit }];
    for h in 1..=blocks {
        let target = next_target(rules, &past);
        let mean_ms = f64_of(work(target)) / rate(h);
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        let solve = (-u.ln() * mean_ms).max(1.0) as u64;
        let ts = past.last().unwrap().timestamp_ms + solve;
        past.push(Past { timestamp_ms: ts, target });
    }
    past
}

fn mean_solve_ms(past: &[Past], from: usize, to: usize) -> f64 {
    (past[to].timestamp_ms - past[from].timestamp_ms) as f64 / (to - from) as f64
}

#[test]
fn lwma_converges_on_the_block_time_and_recovers_after_hash_power_drops_tenfold() {
    let rules = Retarget { limit: target_for_leading_zeros(8), block_time_ms: 10_000, enabled: true };
    let t = rules.block_time_ms as f64;
    // A miner for whom the limit is 1,000 times too easy (10 ms blocks);
    // from block 600 on it has a tenth of that hash power.
    let fast = 256.0 / 10.0;
    for seed in [1, 2, 3] {
        let past = simulate(&rules, 1200, seed, |h| if h < 600 { fast } else { fast / 10.0 });
        let settled = mean_solve_ms(&past, 300, 600);
        assert!((settled - t).abs() < 0.15 * t, "seed {seed}: {settled:.0} ms per block before the drop");
        // Right after the drop blocks are slow, then the target follows:
        // within 150 blocks the average is back near T.
        let right_after = mean_solve_ms(&past, 600, 630);
        assert!(right_after > 2.0 * t, "seed {seed}: the drop shows ({right_after:.0} ms)");
        let recovered = mean_solve_ms(&past, 750, 1200);
        assert!((recovered - t).abs() < 0.15 * t, "seed {seed}: {recovered:.0} ms per block after recovering");
        // The target itself rose about tenfold (easier for the weaker miner).
        let before = f64_of(past[590].target);
        let after = f64_of(past[1190].target);
        assert!((after / before) > 6.0 && (after / before) < 15.0, "seed {seed}: target ratio {}", after / before);
    }
}

#[test]
fn without_retargeting_every_block_uses_the_limit() {
    let rules = Retarget { limit: target_for_leading_zeros(12), block_time_ms: 10_000, enabled: false };
    let past = simulate(&rules, 100, 7, |_| 1000.0);
    assert!(past.iter().all(|p| p.target == rules.limit));
}
