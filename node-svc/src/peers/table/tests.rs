use std::time::Duration;

use super::*;

fn limits() -> PeerLimits {
    PeerLimits {
        max_peers: 3,
        max_inbound: 2,
        target_outbound: 2,
        max_failures: 2,
        max_dial_attempts: 4,
        base_backoff: Duration::from_millis(100),
    }
}

fn table() -> PeerTable {
    PeerTable::new("me:1".into(), "me".into(), limits(), 7)
}

fn tip(id: &str, work: u128) -> PeerTip {
    PeerTip { node_id: id.into(), height: 1, tip: vec![1], work: p2p_proto::work::Work::from(work) }
}

#[test]
fn self_and_invalid_addresses_are_never_learned() {
    let t = table();
    assert!(!t.learn("me:1", PeerSource::Bootstrap, None));
    assert!(!t.learn("other:1", PeerSource::Bootstrap, Some("me")));
    assert!(!t.learn("bad address", PeerSource::Bootstrap, None));
    assert!(t.learn("a:1", PeerSource::Bootstrap, None));
    assert!(!t.learn("A:1", PeerSource::Inbound, None), "same canonical address");
    // Our own ping to a:1 was answered with our node id: dropped and remembered.
    t.alive("a:1", tip("me", 5), true, 10);
    assert!(t.snapshot().is_empty());
    assert!(!t.learn("a:1", PeerSource::Bootstrap, None));
}

#[test]
fn misses_make_a_peer_failing_with_backoff_and_a_reply_revives_it() {
    let t = table();
    t.learn("a:1", PeerSource::Bootstrap, None);
    t.alive("a:1", tip("x", 5), true, 1_000);
    t.failed("a:1", 2_000);
    assert_eq!(t.snapshot()[0].state, PeerState::Active);
    t.failed("a:1", 3_000);
    let p = &t.snapshot()[0];
    assert_eq!(p.state, PeerState::Failing);
    // The base delay plus jitter of up to the delay itself (backon's rule).
    assert!(p.next_attempt_ms >= 3_100 && p.next_attempt_ms <= 3_200, "{}", p.next_attempt_ms);
    assert!(t.due_for_ping(3_000).is_empty());
    assert_eq!(t.due_for_ping(3_200).len(), 1);
    assert!(t.gossip_targets(None, 8).is_empty(), "failing peers get no gossip");
    t.alive("a:1", tip("x", 5), true, 4_000);
    assert_eq!(t.snapshot()[0].state, PeerState::Active);
}

#[test]
fn misbehaviour_bans_until_the_ban_expires() {
    let t = table();
    t.learn("a:1", PeerSource::Inbound, None);
    assert!(!t.penalize("a:1", INVALID_BLOCK_PENALTY, "bad block", 0));
    assert!(t.penalize("a:1", INVALID_BLOCK_PENALTY, "bad block", 0));
    assert!(t.is_banned("a:1", 1));
    t.alive("a:1", tip("x", 5), true, 2);
    assert!(t.is_banned("a:1", 3), "a reply does not lift a ban");
    assert!(!t.is_banned("a:1", BAN_DURATION_MS + 1));
}

#[test]
fn bans_end_on_a_timer_and_never_hold_a_slot() {
    // Inbound share of 2, both taken by peers that get banned.
    let t = PeerTable::new("me:1".into(), "me".into(), PeerLimits { max_peers: 100, ..limits() }, 7);
    for a in ["bad1:1", "bad2:1"] {
        assert!(t.learn(a, PeerSource::Inbound, None));
        t.penalize(a, BAN_SCORE, "invalid block", 0);
        assert!(t.is_banned(a, 1));
    }
    assert_eq!(t.snapshot().iter().filter(|p| p.state == PeerState::Banned).count(), 2, "bans are listed");
    assert!(!t.learn("bad1:1", PeerSource::Inbound, None), "a banned address is not re-learned");
    // Two honest newcomers are admitted: bans do not count toward the share.
    assert!(t.learn("good1:1", PeerSource::Inbound, None));
    assert!(t.learn("good2:1", PeerSource::Inbound, None));
    assert!(t.due_for_ping(0).iter().all(|a| a.starts_with("good")), "banned peers are never pinged");
    // The timer lifts the bans without the peers speaking again.
    assert_eq!(t.expire_bans(BAN_DURATION_MS - 1), 0);
    assert_eq!(t.expire_bans(BAN_DURATION_MS), 2);
    assert_eq!(t.ban_count(), 0);
    assert!(t.learn("bad1:1", PeerSource::Bootstrap, None), "after the ban it may come back");
}

#[test]
fn a_full_ban_list_lifts_the_ban_ending_soonest() {
    let t = PeerTable::new("me:1".into(), "me".into(), PeerLimits { max_peers: MAX_BANS + 10, ..limits() }, 7);
    for i in 0..=MAX_BANS {
        let a = format!("p{i}:1");
        t.learn(&a, PeerSource::Bootstrap, None);
        t.penalize(&a, BAN_SCORE, "x", i as u64);
    }
    assert_eq!(t.ban_count(), MAX_BANS);
    assert!(!t.is_banned("p0:1", 1), "the oldest ban made room");
    assert!(t.is_banned(&format!("p{MAX_BANS}:1"), MAX_BANS as u64));
}

#[test]
fn a_peer_that_never_answered_is_forgotten_after_its_tries_but_configured_ones_stay() {
    let t = PeerTable::new("me:1".into(), "me".into(), PeerLimits { max_peers: 100, ..limits() }, 7);
    t.learn("dead:1", PeerSource::Bootstrap, None);
    t.learn("mine:1", PeerSource::Configured, None);
    t.learn("flaky:1", PeerSource::Bootstrap, None);
    t.alive("flaky:1", tip("f", 1), true, 1);
    for i in 0..limits().max_dial_attempts as u64 {
        for a in ["dead:1", "mine:1", "flaky:1"] {
            t.failed(a, 10 + i);
        }
    }
    assert!(!t.contains("dead:1"), "never answered: forgotten");
    assert!(t.contains("mine:1"), "configured: kept and retried with backoff");
    assert!(t.contains("flaky:1"), "answered once: kept and retried with backoff");
}

#[test]
fn the_table_is_bounded_and_evicts_the_least_useful() {
    let t = table();
    for a in ["a:1", "b:1", "c:1"] {
        t.learn(a, PeerSource::Bootstrap, None);
    }
    t.alive("a:1", tip("a", 1), true, 1);
    t.alive("b:1", tip("b", 1), true, 1);
    assert!(t.learn("d:1", PeerSource::Bootstrap, None));
    let addrs: Vec<_> = t.snapshot().into_iter().map(|p| p.address).collect();
    assert_eq!(addrs, ["a:1", "b:1", "d:1"], "the never-reached peer made room");
    t.alive("a:1", tip("a", 9), true, 2);
    assert_eq!(t.ahead(p2p_proto::work::Work::from(5u64)).first().map(|(a, _)| a.as_str()), Some("a:1"));
    assert!(t.ahead(p2p_proto::work::Work::from(9u64)).is_empty());
}

#[test]
fn inbound_peers_are_capped_and_the_least_useful_one_makes_room() {
    let t = PeerTable::new("me:1".into(), "me".into(), PeerLimits { max_peers: 100, ..limits() }, 7);
    t.learn("in1:1", PeerSource::Inbound, None);
    t.learn("in2:1", PeerSource::Inbound, None);
    t.alive("in1:1", tip("1", 1), true, 5);
    for i in 3..20 {
        t.learn(&format!("in{i}:1"), PeerSource::Inbound, None);
    }
    let inbound: Vec<String> =
        t.snapshot().into_iter().filter(|p| p.source == PeerSource::Inbound).map(|p| p.address).collect();
    assert_eq!(inbound.len(), 2);
    assert!(inbound.contains(&"in1:1".to_string()), "the working inbound peer is kept: {inbound:?}");
}

#[test]
fn outbound_dials_are_bounded_and_spread_over_sources() {
    let t =
        PeerTable::new("me:1".into(), "me".into(), PeerLimits { max_peers: 100, target_outbound: 4, ..limits() }, 7);
    for i in 0..10 {
        t.learn(&format!("boot{i}:1"), PeerSource::Bootstrap, None);
    }
    t.learn("pex1:1", PeerSource::PeerExchange, None);
    t.learn("pex2:1", PeerSource::PeerExchange, None);
    t.learn("in1:1", PeerSource::Inbound, None);
    let dialed: Vec<String> = t.due_for_ping(0);
    assert_eq!(dialed.len(), 5, "4 outbound + every inbound: {dialed:?}");
    assert!(dialed.contains(&"in1:1".to_string()));
    assert_eq!(dialed.iter().filter(|a| a.starts_with("pex")).count(), 2, "{dialed:?}");
    assert_eq!(dialed.iter().filter(|a| a.starts_with("boot")).count(), 2, "{dialed:?}");
}

#[test]
fn the_same_seed_makes_the_same_random_choices() {
    let make = |seed| {
        let t = PeerTable::new("me:1".into(), "me".into(), PeerLimits { max_peers: 100, ..limits() }, seed);
        for i in 0..30 {
            t.learn(&format!("p{i}:1"), PeerSource::Bootstrap, None);
        }
        t
    };
    let (a, b) = (make(42), make(42));
    for _ in 0..5 {
        assert_eq!(a.gossip_targets(None, 4), b.gossip_targets(None, 4));
        let sa: Vec<String> = a.sample(6).into_iter().map(|p| p.address).collect();
        let sb: Vec<String> = b.sample(6).into_iter().map(|p| p.address).collect();
        assert_eq!(sa, sb);
    }
    let other = make(43);
    let picks = |t: &PeerTable| (0..5).map(|_| t.gossip_targets(None, 4)).collect::<Vec<_>>();
    assert_ne!(picks(&make(42)), picks(&other), "another seed chooses differently");
}

#[test]
fn a_node_id_hint_is_corrected_only_by_a_better_source_and_never_once_proven() {
    let t = PeerTable::new("me:1".into(), "me".into(), PeerLimits { max_peers: 100, ..limits() }, 7);
    let id = |t: &PeerTable| t.node_id_of("a:1");
    t.learn("a:1", PeerSource::PeerExchange, Some("from-a-peer"));
    assert_eq!(id(&t).as_deref(), Some("from-a-peer"));
    t.learn("a:1", PeerSource::Inbound, Some("another-peer-says"));
    assert_eq!(id(&t).as_deref(), Some("from-a-peer"), "an equally trusted hint does not replace it");
    t.learn("a:1", PeerSource::Bootstrap, Some("registered"));
    assert_eq!(id(&t).as_deref(), Some("registered"), "the bootstrap's word beats a peer's");
    // Our own handshake proved who is there: nobody's hint changes it.
    t.alive("a:1", tip("proven", 1), true, 5);
    t.learn("a:1", PeerSource::Configured, Some("operator-typo"));
    let p = t.snapshot().into_iter().find(|p| p.address == "a:1").unwrap();
    assert_eq!((p.node_id.as_str(), p.verified), ("proven", true));
    // An answer over a link that proved nothing (plaintext) cannot override it either.
    t.alive("a:1", tip("claimed", 1), false, 6);
    assert_eq!(id(&t).as_deref(), Some("proven"));
}

#[test]
fn a_node_proven_at_one_address_is_not_learned_again_at_another() {
    let t = PeerTable::new("me:1".into(), "me".into(), PeerLimits { max_peers: 100, ..limits() }, 7);
    t.learn("a:1", PeerSource::Bootstrap, None);
    t.alive("a:1", tip("x", 1), true, 1);
    assert!(!t.learn("b:1", PeerSource::Inbound, Some("x")), "one entry per node");
    assert!(t.learn("c:1", PeerSource::Inbound, Some("y")));
    assert_eq!(t.address_of("x").as_deref(), Some("a:1"));
    assert_eq!(t.address_of("y").as_deref(), Some("c:1"));
}

#[test]
fn banning_a_node_id_drops_and_bans_where_it_was_proven_and_nothing_else() {
    let t = PeerTable::new("me:1".into(), "me".into(), PeerLimits { max_peers: 100, ..limits() }, 7);
    // Someone claims the bad node is at an honest address: a hint, not proof.
    assert!(t.learn("honest:1", PeerSource::PeerExchange, Some("bad-id")));
    t.learn("bad:1", PeerSource::Bootstrap, None);
    t.alive("bad:1", tip("bad-id", 1), true, 1);
    assert!(t.penalize("bad-id", BAN_SCORE, "invalid block", 10));
    assert!(t.is_node_banned("bad-id", 11));
    assert!(t.is_banned("bad:1", 11), "the address it was proven at is banned with it");
    assert!(!t.contains("bad:1"));
    assert!(!t.is_banned("honest:1", 11), "a mere claim about an address bans nothing");
    assert!(t.contains("honest:1"));
    assert!(!t.learn("elsewhere:1", PeerSource::Inbound, Some("bad-id")), "a banned id is not learned");
    // If the honest address turns out to be the banned node, it goes too.
    t.alive("honest:1", tip("bad-id", 1), true, 12);
    assert!(!t.contains("honest:1"));
    // Everything ends on the timer.
    t.expire_bans(10 + BAN_DURATION_MS);
    assert!(!t.is_node_banned("bad-id", 10 + BAN_DURATION_MS) && !t.is_banned("bad:1", 10 + BAN_DURATION_MS));
}

#[test]
fn an_inbound_node_without_an_entry_is_scored_and_scores_are_bounded() {
    let t = table();
    assert!(!t.penalize("inbound-id", INVALID_BLOCK_PENALTY, "bad", 0));
    assert!(t.penalize("inbound-id", INVALID_BLOCK_PENALTY, "bad", 0));
    assert!(t.is_node_banned("inbound-id", 1));
    for i in 0..MAX_SCORES + 50 {
        t.penalize(&format!("n{i}"), -1, "minor", 0);
    }
    assert!(t.lock().scores.len() <= MAX_SCORES + 1);
    assert!(t.unban("inbound-id"));
    assert!(!t.is_node_banned("inbound-id", 2));
}
