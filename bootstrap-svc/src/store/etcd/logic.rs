//! What a write does to one address's keys, decided from what was read:
//! pure, so the rules are unit-tested without etcd, and the store commits
//! the result only if nothing it read has changed since (compare-and-swap
//! on the revisions). The rules are the redb writer's (`store::redb`):
//! the access checks of [`crate::auth`], the replay floor, verification.

use p2p_proto::bootstrap::{PeerEvent, PeerEventKind};

use super::keys::Tomb;
use crate::auth::{self, RemoveAttempt};
use crate::error::Error;
use crate::lease;
use crate::store::record::PeerRecord;
use crate::store::{PendingCheck, RegisterCmd, Registered, RemoveCmd, Verification, event};

/// An address's keys as read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// The record, under `l/` (listed) or `p/` (pending) by its `pending` flag.
    pub rec: Option<PeerRecord>,
    pub tomb: Option<Tomb>,
}

/// What a write leaves behind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct After {
    pub rec: Option<PeerRecord>,
    /// A new replay floor (None: the old one, if any, stays).
    pub tomb: Option<Tomb>,
    pub events: Vec<PeerEvent>,
}

impl After {
    fn unchanged(view: &View) -> Self {
        After { rec: view.rec.clone(), tomb: None, events: Vec::new() }
    }

    /// Whether committing this would change nothing.
    pub fn is_noop(&self, view: &View) -> bool {
        self.rec == view.rec && self.tomb.is_none() && self.events.is_empty()
    }
}

/// The floor a signed record leaves once it is gone.
fn floor_of(rec: &PeerRecord, ts: u64, window: u64) -> Option<Tomb> {
    (rec.public_key.len() == 32).then(|| Tomb {
        ts_ms: ts,
        key: rec.public_key.clone(),
        until_ms: ts.saturating_add(window),
    })
}

pub fn register(view: &View, cmd: &RegisterCmd, now: u64, window: u64) -> Result<(After, Registered), Error> {
    let addr = cmd.address.as_str();
    let expires = lease::expires_at(now, cmd.ttl_secs);
    let mut events = Vec::new();
    // An expired lease is gone even if etcd has not deleted it yet.
    let existing = match &view.rec {
        Some(rec) if lease::is_live(rec.expires_at_ms, now) => Some(rec.clone()),
        Some(stale) => {
            if !stale.pending {
                events.push(event(PeerEventKind::Expired, stale.to_peer(addr), now));
            }
            None
        }
        None => None,
    };
    // The floor survives the record: kept with each signed write, so a
    // captured request stays refused after a removal or expiry.
    if let Some(claim) = &cmd.claim
        && let Some(tomb) = &view.tomb
        && tomb.key == claim.public_key
        && lease::is_live(tomb.until_ms, now)
        && claim.timestamp_ms <= tomb.ts_ms
    {
        return Err(auth::replayed(claim.timestamp_ms, tomb.ts_ms));
    }
    let (mut rec, created) = match existing {
        Some(mut rec) => {
            auth::may_register(&rec.owner(), cmd.claim.as_ref(), &cmd.client_ip, addr)?;
            let was_listed = !rec.pending;
            if let Some(claim) = &cmd.claim {
                if claim.public_key != rec.public_key {
                    // A new owner has proven nothing yet.
                    rec.public_key = claim.public_key.clone();
                    rec.proven_node_id.clear();
                    rec.verify_attempts = 0;
                    if cmd.verify {
                        rec.pending = true;
                        rec.verify_next_ms = now;
                        if was_listed {
                            events.push(event(PeerEventKind::Left, rec.to_peer(addr), now));
                        }
                    }
                }
                rec.last_signed_ts_ms = claim.timestamp_ms;
                rec.registrant_ip = cmd.client_ip.clone();
            }
            if rec.pending && !cmd.verify {
                list(&mut rec);
            }
            rec.expires_at_ms = expires;
            (rec, false)
        }
        None => {
            let mut rec = PeerRecord {
                public_key: cmd.claim.as_ref().map(|c| c.public_key.clone()).unwrap_or_default(),
                registered_at_ms: now,
                expires_at_ms: expires,
                last_signed_ts_ms: cmd.claim.as_ref().map(|c| c.timestamp_ms).unwrap_or(0),
                registrant_ip: cmd.client_ip.clone(),
                pending: cmd.verify,
                verify_next_ms: if cmd.verify { now } else { 0 },
                ..Default::default()
            };
            if !cmd.verify {
                list(&mut rec);
            }
            (rec, true)
        }
    };
    rec.last_seen_ms = now;
    let peer = rec.to_peer(addr);
    if !rec.pending {
        let kind = if created { PeerEventKind::Joined } else { PeerEventKind::Refreshed };
        events.push(event(kind, peer.clone(), now));
    }
    let tomb = cmd.claim.as_ref().and_then(|c| floor_of(&rec, c.timestamp_ms, window));
    Ok((After { rec: Some(rec), tomb, events }, Registered { created, peer }))
}

fn list(rec: &mut PeerRecord) {
    rec.pending = false;
    rec.verify_attempts = 0;
    rec.verify_next_ms = 0;
}

pub fn remove(view: &View, cmd: &RemoveCmd, now: u64, window: u64) -> Result<(After, bool), Error> {
    let addr = cmd.address.as_str();
    let Some(rec) = &view.rec else { return Ok((After::unchanged(view), false)) };
    if !lease::is_live(rec.expires_at_ms, now) {
        // Gone already; etcd deletes it when its lease ends.
        return Ok((After::unchanged(view), false));
    }
    let attempt = RemoveAttempt {
        timestamp_ms: cmd.timestamp_ms,
        verified_key: cmd.verified_key.as_deref(),
        client_ip: &cmd.client_ip,
    };
    auth::may_remove(&rec.owner(), &attempt, addr)?;
    let last = rec.last_signed_ts_ms.max(cmd.timestamp_ms);
    let events = if rec.pending { Vec::new() } else { vec![event(PeerEventKind::Left, rec.to_peer(addr), now)] };
    Ok((After { rec: None, tomb: floor_of(rec, last, window), events }, true))
}

pub fn verified(view: &View, check: &PendingCheck, outcome: &Verification, now: u64) -> After {
    let addr = check.address.as_str();
    let Some(mut rec) = view.rec.clone() else { return After::unchanged(view) };
    if !rec.pending || rec.public_key != check.public_key || !lease::is_live(rec.expires_at_ms, now) {
        return After::unchanged(view);
    }
    let mut events = Vec::new();
    match outcome {
        Verification::Passed { node_id } => {
            if rec.public_key.is_empty() {
                rec.proven_node_id = node_id.clone();
            }
            list(&mut rec);
            events.push(event(PeerEventKind::Joined, rec.to_peer(addr), now));
        }
        Verification::Failed { retry_at_ms } => {
            rec.verify_attempts = rec.verify_attempts.saturating_add(1);
            rec.verify_next_ms = *retry_at_ms;
        }
    }
    After { rec: Some(rec), tomb: None, events }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SignedClaim;

    const WINDOW: u64 = 60_000;

    fn cmd(addr: &str, claim: Option<SignedClaim>, ip: &str, verify: bool) -> RegisterCmd {
        RegisterCmd { address: addr.into(), claim, ttl_secs: 30, client_ip: ip.into(), verify }
    }

    fn claim(key: u8, ts: u64) -> Option<SignedClaim> {
        Some(SignedClaim { public_key: vec![key; 32], timestamp_ms: ts })
    }

    fn kinds(after: &After) -> Vec<PeerEventKind> {
        after.events.iter().map(|e| PeerEventKind::try_from(e.kind).unwrap_or_default()).collect()
    }

    fn apply(view: &View, after: &After) -> View {
        View { rec: after.rec.clone(), tomb: after.tomb.clone().or_else(|| view.tomb.clone()) }
    }

    #[test]
    fn register_refresh_remove_and_the_floor_outlives_the_record() {
        let v0 = View::default();
        let (a1, r1) = register(&v0, &cmd("a:1", claim(1, 1_000), "9.9.9.9", false), 1_000, WINDOW).unwrap();
        assert!(r1.created);
        assert_eq!(kinds(&a1), [PeerEventKind::Joined]);
        assert_eq!(a1.tomb.as_ref().map(|t| t.ts_ms), Some(1_000));
        let v1 = apply(&v0, &a1);
        // The same request again is a replay; a newer one refreshes.
        assert!(register(&v1, &cmd("a:1", claim(1, 1_000), "9.9.9.9", false), 1_500, WINDOW).is_err());
        let (a2, r2) = register(&v1, &cmd("a:1", claim(1, 2_000), "1.1.1.1", false), 2_000, WINDOW).unwrap();
        assert!(!r2.created);
        assert_eq!(kinds(&a2), [PeerEventKind::Refreshed]);
        let v2 = apply(&v1, &a2);
        // Another key cannot take a listed, signed address.
        assert!(register(&v2, &cmd("a:1", claim(2, 3_000), "9.9.9.9", false), 3_000, WINDOW).is_err());
        // Removed by its key: LEFT, and the replay floor stays.
        let rm = RemoveCmd {
            address: "a:1".into(),
            timestamp_ms: 3_000,
            verified_key: Some(vec![1; 32]),
            client_ip: "8.8.8.8".into(),
        };
        let (a3, removed) = remove(&v2, &rm, 3_000, WINDOW).unwrap();
        assert!(removed);
        assert_eq!(kinds(&a3), [PeerEventKind::Left]);
        let v3 = apply(&v2, &a3);
        assert!(v3.rec.is_none());
        assert!(register(&v3, &cmd("a:1", claim(1, 2_500), "9.9.9.9", false), 4_000, WINDOW).is_err());
        assert!(register(&v3, &cmd("a:1", claim(1, 3_001), "9.9.9.9", false), 4_000, WINDOW).is_ok());
    }

    #[test]
    fn an_expired_record_is_gone_and_its_successor_joins() {
        let (a1, _) = register(&View::default(), &cmd("a:1", None, "1.1.1.1", false), 0, WINDOW).unwrap();
        let v1 = apply(&View::default(), &a1);
        // 30 s later, someone else may take the unsigned address.
        let (a2, r2) = register(&v1, &cmd("a:1", None, "2.2.2.2", false), 30_000, WINDOW).unwrap();
        assert!(r2.created);
        assert_eq!(kinds(&a2), [PeerEventKind::Expired, PeerEventKind::Joined]);
        // Before then, not.
        assert!(register(&v1, &cmd("a:1", None, "2.2.2.2", false), 29_999, WINDOW).is_err());
        // Removing an expired record removes nothing.
        let rm = RemoveCmd { address: "a:1".into(), timestamp_ms: 0, verified_key: None, client_ip: "1.1.1.1".into() };
        let (a3, removed) = remove(&v1, &rm, 30_000, WINDOW).unwrap();
        assert!(!removed && a3.is_noop(&v1));
    }

    #[test]
    fn pending_registrations_are_announced_only_once_verified() {
        let (a1, _) = register(&View::default(), &cmd("a:1", claim(1, 10), "1.1.1.1", true), 10, WINDOW).unwrap();
        assert!(a1.events.is_empty());
        let v1 = apply(&View::default(), &a1);
        assert!(v1.rec.as_ref().unwrap().pending);
        let check = PendingCheck { address: "a:1".into(), public_key: vec![1; 32], attempts: 0 };
        let failed = verified(&v1, &check, &Verification::Failed { retry_at_ms: 500 }, 20);
        assert!(failed.events.is_empty());
        assert_eq!(failed.rec.as_ref().map(|r| (r.verify_attempts, r.verify_next_ms)), Some((1, 500)));
        let passed = verified(&v1, &check, &Verification::Passed { node_id: "x".into() }, 20);
        assert_eq!(kinds(&passed), [PeerEventKind::Joined]);
        assert!(!passed.rec.as_ref().unwrap().pending);
        // An outcome for another key (claimed meanwhile) changes nothing.
        let other = PendingCheck { public_key: vec![2; 32], ..check };
        assert!(verified(&v1, &other, &Verification::Passed { node_id: "x".into() }, 20).is_noop(&v1));
        // An unsigned listed record claimed by a key from its registrant
        // leaves the list until the key is verified: LEFT.
        let (u1, _) = register(&View::default(), &cmd("b:1", None, "5.5.5.5", false), 30, WINDOW).unwrap();
        let u = apply(&View::default(), &u1);
        let (u2, r) = register(&u, &cmd("b:1", claim(3, 40), "5.5.5.5", true), 40, WINDOW).unwrap();
        assert!(!r.created && r.peer.pending);
        assert_eq!(kinds(&u2), [PeerEventKind::Left]);
    }
}
