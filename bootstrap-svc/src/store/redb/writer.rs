//! The registry's single writer thread: applies queued writes in batches,
//! one transaction and one fsync for all the operations that arrived while
//! the previous commit was running (group commit), and answers each only
//! after the commit is durable.

use std::sync::Arc;
use std::time::Duration;

use ::redb::{Database, ReadableTable};
use p2p_proto::bootstrap::{PeerEvent, PeerEventKind};
use p2p_proto::clock::Clock;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::tables::{PeerRecord, Tables};
use super::{DbSlot, store_down};
use crate::auth::{self, RemoveAttempt};
use crate::error::Error;
use crate::lease;
use crate::store::{PendingCheck, RegisterCmd, Registered, RemoveCmd, Verification, event};

/// Most operations folded into one write transaction (one fsync).
pub(super) const MAX_BATCH: usize = 1024;
/// How often a failed store is reopened.
const RECOVERY_INTERVAL: Duration = Duration::from_millis(500);

pub(super) enum WriteOp {
    Register(RegisterCmd, oneshot::Sender<Result<Registered, Error>>),
    Remove(RemoveCmd, oneshot::Sender<Result<bool, Error>>),
    Purge(usize, oneshot::Sender<Result<usize, Error>>),
    Verified(PendingCheck, Verification, oneshot::Sender<Result<(), Error>>),
}

/// Runs until every sender is gone.
pub(super) fn run(
    slot: Arc<DbSlot>,
    mut rx: mpsc::Receiver<WriteOp>,
    events: broadcast::Sender<PeerEvent>,
    clock: Arc<dyn Clock>,
    replay_window_ms: u64,
    metrics: crate::metrics::CommitMetrics,
) {
    loop {
        let first = if slot.is_healthy() {
            match rx.blocking_recv() {
                Some(op) => op,
                None => break,
            }
        } else {
            // Failed: try to reopen every so often, answering whatever
            // arrives meanwhile at once instead of queueing it.
            if slot.try_recover() {
                continue;
            }
            let deadline = std::time::Instant::now() + RECOVERY_INTERVAL;
            let mut closed = false;
            while std::time::Instant::now() < deadline {
                match rx.try_recv() {
                    Ok(op) => reply_with_failure(op, &store_down())(None),
                    Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(20)),
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                break;
            }
            continue;
        };
        let db = match slot.get() {
            Ok(db) => db,
            Err(e) => {
                reply_with_failure(first, &e)(None);
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let ops = batch.len();
        let started = std::time::Instant::now();
        let (replies, outcome) = apply_batch(&db, batch, clock.now_unix_ms(), replay_window_ms);
        drop(db);
        metrics.batch_size.observe(ops as f64);
        metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        match &outcome {
            Ok(_) => tracing::trace!(ops, "registry batch committed"),
            Err(e) => {
                tracing::error!(error = %e, ops, "registry batch failed; nothing in it was applied");
                slot.fail(e);
            }
        }
        // Replies go out only after the commit is durable.
        for reply in replies {
            reply(outcome.as_ref().err());
        }
        for ev in outcome.unwrap_or_default() {
            // No subscribers is fine: events are a courtesy, the store is the truth.
            let _ = events.send(ev);
        }
    }
    tracing::debug!("registry writer stopped");
}

/// Answers one op: with its own result, or with the batch's storage failure.
type Reply = Box<dyn FnOnce(Option<&Error>) + Send>;

fn reply_with<T: Send + 'static>(tx: oneshot::Sender<Result<T, Error>>, result: Result<T, Error>) -> Reply {
    Box::new(move |batch_failed| {
        let _ = tx.send(match batch_failed {
            None => result,
            Some(e) => Err(same_failure(e)),
        });
    })
}

/// The storage error `e` again, for another request of the same batch.
fn same_failure(e: &Error) -> Error {
    match e {
        Error::Storage(cause) => Error::Storage(cause.clone()),
        Error::StoreDown(why) => Error::StoreDown(why.clone()),
        other => Error::storage_msg(other.to_string()),
    }
}

fn reply_with_failure(op: WriteOp, e: &Error) -> Reply {
    let e = same_failure(e);
    match op {
        WriteOp::Register(_, r) => reply_with(r, Err(e)),
        WriteOp::Remove(_, r) => reply_with(r, Err(e)),
        WriteOp::Purge(_, r) => reply_with(r, Err(e)),
        WriteOp::Verified(_, _, r) => reply_with(r, Err(e)),
    }
}

/// Runs every op of a batch in one transaction. A request error is that op's
/// answer; a storage error aborts the transaction and fails every op in it.
fn apply_batch(
    db: &Database,
    batch: Vec<WriteOp>,
    now: u64,
    window: u64,
) -> (Vec<Reply>, Result<Vec<PeerEvent>, Error>) {
    let fail_all = |batch: Vec<WriteOp>, e: Error| {
        let replies = batch.into_iter().map(|op| reply_with_failure(op, &e)).collect();
        (replies, Err(e))
    };
    let mut tx = match db.begin_write() {
        Ok(tx) => tx,
        Err(e) => return fail_all(batch, e.into()),
    };
    tx.set_quick_repair(true);
    let mut replies = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let mut failure: Option<Error> = None;
    {
        let mut t = match Tables::open(&tx) {
            Ok(t) => t,
            Err(e) => return fail_all(batch, e),
        };
        for op in batch {
            if let Some(e) = &failure {
                replies.push(reply_with_failure(op, e));
                continue;
            }
            let reply = match op {
                WriteOp::Register(cmd, r) => {
                    apply_one(r, register(&mut t, &cmd, now, window, &mut events), &mut failure)
                }
                WriteOp::Remove(cmd, r) => apply_one(r, remove(&mut t, &cmd, now, window, &mut events), &mut failure),
                WriteOp::Purge(max, r) => apply_one(r, purge(&mut t, max, now, window, &mut events), &mut failure),
                WriteOp::Verified(check, outcome, r) => {
                    apply_one(r, verified(&mut t, &check, outcome, now, &mut events), &mut failure)
                }
            };
            replies.push(reply);
        }
    }
    let committed = match failure {
        Some(e) => Err(e),
        None => tx.commit().map_err(Error::from),
    };
    (replies, committed.map(|()| events))
}

fn apply_one<T: Send + 'static>(
    reply: oneshot::Sender<Result<T, Error>>,
    result: Result<T, Error>,
    failure: &mut Option<Error>,
) -> Reply {
    if let Err(e @ Error::Storage(_)) = &result {
        *failure = Some(same_failure(e));
    }
    reply_with(reply, result)
}

/// Deletes an expired registration, keeping its replay floor.
fn expire(
    t: &mut Tables<'_>,
    addr: &str,
    rec: &PeerRecord,
    now: u64,
    window: u64,
    events: &mut Vec<PeerEvent>,
) -> Result<(), Error> {
    t.delete(addr, rec)?;
    t.tombstone(addr, rec, rec.last_signed_ts_ms, rec.last_signed_ts_ms.saturating_add(window))?;
    // Pending registrations were never announced, so their end is not either.
    if !rec.pending {
        events.push(event(PeerEventKind::Expired, rec.to_peer(addr), now));
    }
    Ok(())
}

fn register(
    t: &mut Tables<'_>,
    cmd: &RegisterCmd,
    now: u64,
    window: u64,
    events: &mut Vec<PeerEvent>,
) -> Result<Registered, Error> {
    let addr = cmd.address.as_str();
    let expires = lease::expires_at(now, cmd.ttl_secs);
    // An expired lease is gone, even if not purged yet: the address is free.
    let existing = match t.get(addr)? {
        Some(rec) if lease::is_live(rec.expires_at_ms, now) => Some(rec),
        Some(stale) => {
            expire(t, addr, &stale, now, window, events)?;
            None
        }
        None => None,
    };
    // A request signed by a key is never older than what was last accepted
    // from that key for this address, even after a removal or expiry
    // (within the freshness window).
    if let Some(claim) = &cmd.claim
        && let Some(floor) = t.replay_floor(addr, &claim.public_key)?
        && claim.timestamp_ms <= floor
    {
        return Err(auth::replayed(claim.timestamp_ms, floor));
    }
    let (mut rec, created) = match existing {
        Some(mut rec) => {
            auth::may_register(&rec.owner(), cmd.claim.as_ref(), &cmd.client_ip, addr)?;
            let was_listed = !rec.pending;
            if let Some(claim) = &cmd.claim {
                if claim.public_key != rec.public_key {
                    // A new owner (a key claiming an unsigned or pending
                    // registration) has proven nothing yet.
                    rec.public_key = claim.public_key.clone();
                    rec.proven_node_id.clear();
                    rec.verify_attempts = 0;
                    if cmd.verify {
                        t.make_pending(addr, &mut rec, now)?;
                        if was_listed {
                            events.push(event(PeerEventKind::Left, rec.to_peer(addr), now));
                        }
                    }
                }
                // Signed refresh (possibly from a new IP: the key, not the
                // IP, owns it).
                rec.last_signed_ts_ms = claim.timestamp_ms;
                rec.registrant_ip = cmd.client_ip.clone();
            }
            if rec.pending && !cmd.verify {
                t.list(addr, &mut rec)?;
            }
            t.expiry.remove((rec.expires_at_ms, addr))?;
            rec.expires_at_ms = expires;
            rec.last_seen_ms = now;
            (rec, false)
        }
        None => {
            let mut rec = PeerRecord {
                public_key: cmd.claim.as_ref().map(|c| c.public_key.clone()).unwrap_or_default(),
                registered_at_ms: now,
                last_seen_ms: now,
                expires_at_ms: expires,
                last_signed_ts_ms: cmd.claim.as_ref().map(|c| c.timestamp_ms).unwrap_or(0),
                registrant_ip: cmd.client_ip.clone(),
                ..Default::default()
            };
            if cmd.verify {
                t.enqueue_new(addr, &mut rec, now)?;
            } else {
                t.list(addr, &mut rec)?;
            }
            (rec, true)
        }
    };
    rec.last_seen_ms = now;
    t.put(addr, &rec)?;
    t.expiry.insert((rec.expires_at_ms, addr), ())?;
    let peer = rec.to_peer(addr);
    if !rec.pending {
        let kind = if created { PeerEventKind::Joined } else { PeerEventKind::Refreshed };
        events.push(event(kind, peer.clone(), now));
    }
    Ok(Registered { created, peer })
}

/// What the verifier found, applied if the registration is still the one it checked.
fn verified(
    t: &mut Tables<'_>,
    check: &PendingCheck,
    outcome: Verification,
    now: u64,
    events: &mut Vec<PeerEvent>,
) -> Result<(), Error> {
    let addr = check.address.as_str();
    let Some(mut rec) = t.get(addr)? else { return Ok(()) };
    if !rec.pending || rec.public_key != check.public_key || !lease::is_live(rec.expires_at_ms, now) {
        return Ok(());
    }
    match outcome {
        Verification::Passed { node_id } => {
            if rec.public_key.is_empty() {
                rec.proven_node_id = node_id;
            }
            t.list(addr, &mut rec)?;
            t.put(addr, &rec)?;
            events.push(event(PeerEventKind::Joined, rec.to_peer(addr), now));
        }
        Verification::Failed { retry_at_ms } => {
            rec.verify_attempts = rec.verify_attempts.saturating_add(1);
            t.make_pending(addr, &mut rec, retry_at_ms)?;
            t.put(addr, &rec)?;
        }
    }
    Ok(())
}

fn remove(
    t: &mut Tables<'_>,
    cmd: &RemoveCmd,
    now: u64,
    window: u64,
    events: &mut Vec<PeerEvent>,
) -> Result<bool, Error> {
    let addr = cmd.address.as_str();
    let Some(rec) = t.get(addr)? else { return Ok(false) };
    if !lease::is_live(rec.expires_at_ms, now) {
        expire(t, addr, &rec, now, window, events)?;
        return Ok(false);
    }
    let attempt = RemoveAttempt {
        timestamp_ms: cmd.timestamp_ms,
        verified_key: cmd.verified_key.as_deref(),
        client_ip: &cmd.client_ip,
    };
    auth::may_remove(&rec.owner(), &attempt, addr)?;
    t.delete(addr, &rec)?;
    let last = rec.last_signed_ts_ms.max(cmd.timestamp_ms);
    t.tombstone(addr, &rec, last, last.saturating_add(window))?;
    if !rec.pending {
        events.push(event(PeerEventKind::Left, rec.to_peer(addr), now));
    }
    Ok(true)
}

fn purge(t: &mut Tables<'_>, max: usize, now: u64, window: u64, events: &mut Vec<PeerEvent>) -> Result<usize, Error> {
    t.purge_tombstones(now, max)?;
    let expired: Vec<String> = {
        let mut out = Vec::new();
        for entry in t.expiry.range::<(u64, &str)>(..(now.saturating_add(1), ""))?.take(max) {
            let (k, _) = entry?;
            let (at, addr) = k.value();
            if at <= now {
                out.push(addr.to_string());
            }
        }
        out
    };
    for addr in &expired {
        if let Some(rec) = t.get(addr)? {
            expire(t, addr, &rec, now, window, events)?;
        }
    }
    Ok(expired.len())
}
