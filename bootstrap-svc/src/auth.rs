//! Who may do what to a registration: the access rules, pure (no I/O, no
//! clock of their own), so they are property-tested on their own and the
//! store only applies their verdicts inside its write transaction.
//!
//! - A Register may carry a key; then its signature over the canonical
//!   payload must verify and its timestamp be within the freshness window
//!   ([`check_register`], before the writer).
//! - A live key-bound address can be refreshed only by a request signed by
//!   that key with a timestamp newer than the last one accepted (so a
//!   captured request cannot be replayed); unsigned registrations never take
//!   it over. A key may claim an unsigned address from its registrant IP,
//!   and any registration still pending verification: an unverified claim
//!   holds nothing, since the verification decides who is at the address
//!   ([`may_register`]).
//! - A key-bound registration is removed only by a fresh, newer signature of
//!   its key; an unsigned one only from the IP that registered it
//!   ([`may_remove`]).

use p2p_proto::signing::{self, PUBLIC_KEY_LEN, RegistryId, SIGNATURE_LEN};

use crate::error::Error;
use crate::lease;

/// A Register's proof of key ownership, already verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedClaim {
    pub public_key: Vec<u8>,
    pub timestamp_ms: u64,
}

/// The parts of a stored registration the rules look at.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// Empty when the registration is unsigned.
    pub public_key: &'a [u8],
    /// Newest signed timestamp accepted for the address.
    pub last_signed_ts_ms: u64,
    /// IP the registration came from.
    pub registrant_ip: &'a str,
    /// Not verified yet: nobody has proven to control the address.
    pub pending: bool,
}

/// A Remove as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct RemoveAttempt<'a> {
    pub timestamp_ms: u64,
    /// The key its signature verified against ([`verify_remove`]), if signed.
    pub verified_key: Option<&'a [u8]>,
    pub client_ip: &'a str,
}

/// What a Register carries, for [`check_register`].
#[derive(Debug, Clone, Copy)]
pub struct RegisterFields<'a> {
    /// Canonical address.
    pub address: &'a str,
    pub public_key: &'a [u8],
    pub signature: &'a [u8],
    pub ttl_seconds: u32,
    pub timestamp_ms: u64,
}

/// Checks a signed timestamp is present and within `window_ms` of `now_ms`.
pub fn check_fresh(ts: u64, now_ms: u64, window_ms: u64) -> Result<(), Error> {
    if ts == 0 {
        return Err(Error::invalid("timestamp_unix_ms", "is required with a signature"));
    }
    if !lease::is_fresh(ts, now_ms, window_ms) {
        return Err(Error::PermissionDenied(format!(
            "timestamp_unix_ms {ts} is {:.1}s away from the server's clock; signed requests must be within {}s \
             (check the client's clock, then sign a new request)",
            ts.abs_diff(now_ms) as f64 / 1000.0,
            window_ms / 1000
        )));
    }
    Ok(())
}

/// Verifies a Register's key, signature and timestamp; `None` for an
/// unsigned registration (refused when `require_signatures`).
pub fn check_register(
    registry: &RegistryId,
    r: &RegisterFields<'_>,
    require_signatures: bool,
    now_ms: u64,
    window_ms: u64,
) -> Result<Option<SignedClaim>, Error> {
    if r.public_key.is_empty() {
        if !r.signature.is_empty() {
            return Err(Error::invalid("public_key", "is required to check the signature"));
        }
        if require_signatures {
            return Err(Error::Unauthenticated(
                "this server only accepts signed registrations: set public_key, timestamp_unix_ms and signature \
                 (`p2pctl bootstrap register --key FILE` does)"
                    .into(),
            ));
        }
        return Ok(None);
    }
    if r.public_key.len() != PUBLIC_KEY_LEN {
        return Err(Error::invalid(
            "public_key",
            format!("must be {PUBLIC_KEY_LEN} bytes (ed25519), got {}", r.public_key.len()),
        ));
    }
    if r.signature.len() != SIGNATURE_LEN {
        return Err(Error::invalid(
            "signature",
            format!("must be {SIGNATURE_LEN} bytes (ed25519) when public_key is set, got {}", r.signature.len()),
        ));
    }
    check_fresh(r.timestamp_ms, now_ms, window_ms)?;
    let payload = signing::register_payload(registry, r.address, r.public_key, r.ttl_seconds, r.timestamp_ms);
    signing::verify(r.public_key, &payload, r.signature).map_err(|e| match e {
        signing::SignatureError::KeyInvalid => Error::invalid("public_key", e),
        _ => Error::PermissionDenied(format!(
            "{e} (sign the canonical address {:?} and this registry's id {}, from GetInfo)",
            r.address,
            hex::encode(registry)
        )),
    })?;
    Ok(Some(SignedClaim { public_key: r.public_key.to_vec(), timestamp_ms: r.timestamp_ms }))
}

/// Checks the shape and freshness of a Remove's signature (if any), before
/// the writer; the signature itself is checked against the stored key by
/// [`may_remove`].
pub fn check_remove(signature: &[u8], ts: u64, now_ms: u64, window_ms: u64) -> Result<(), Error> {
    if signature.is_empty() {
        return Ok(());
    }
    if signature.len() != SIGNATURE_LEN {
        return Err(Error::invalid(
            "signature",
            format!("must be {SIGNATURE_LEN} bytes (ed25519), got {}", signature.len()),
        ));
    }
    check_fresh(ts, now_ms, window_ms)
}

/// Verifies a Remove's signature by `public_key` (before the writer).
pub fn verify_remove(
    registry: &RegistryId,
    public_key: &[u8],
    address: &str,
    ts: u64,
    signature: &[u8],
) -> Result<(), Error> {
    let payload = signing::remove_payload(registry, address, ts);
    signing::verify(public_key, &payload, signature).map_err(|e| {
        Error::PermissionDenied(format!(
            "address {address} is registered by node {}: {e}",
            signing::node_id(public_key)
        ))
    })
}

/// Whether a Register with `claim` from `client_ip` may refresh or claim
/// the live registration owned by `owner` at `address`. An unsigned
/// registration belongs to the IP that made it: from anywhere else it can be
/// neither refreshed nor claimed until its lease ends, unless it is still
/// pending verification, when any key may claim it, as it may a pending
/// registration of another key (so a squatter's unverified claim cannot
/// keep a node from its own address).
pub fn may_register(
    owner: &Owner<'_>,
    claim: Option<&SignedClaim>,
    client_ip: &str,
    address: &str,
) -> Result<(), Error> {
    if owner.pending
        && let Some(c) = claim
        && c.public_key != owner.public_key
    {
        return Ok(());
    }
    if owner.public_key.is_empty() {
        if client_ip != owner.registrant_ip {
            return Err(Error::PermissionDenied(format!(
                "address {address} was registered without a key from {}; only that host can refresh or claim it \
                 until its lease ends",
                owner.registrant_ip
            )));
        }
        return Ok(());
    }
    let owner_id = signing::node_id(owner.public_key);
    match claim {
        Some(c) if c.public_key == owner.public_key => {
            if c.timestamp_ms <= owner.last_signed_ts_ms {
                return Err(replayed(c.timestamp_ms, owner.last_signed_ts_ms));
            }
            Ok(())
        }
        Some(_) => Err(Error::PermissionDenied(format!(
            "address {address} is registered by node {owner_id}, which proved it is there; a different key cannot \
             refresh or take it over"
        ))),
        None => Err(Error::PermissionDenied(format!(
            "address {address} is registered by node {owner_id}; refresh it with a request signed by that key"
        ))),
    }
}

/// Whether `attempt` may remove the live registration owned by `owner`.
pub fn may_remove(owner: &Owner<'_>, attempt: &RemoveAttempt<'_>, address: &str) -> Result<(), Error> {
    if owner.public_key.is_empty() {
        if attempt.client_ip != owner.registrant_ip {
            return Err(Error::PermissionDenied(format!(
                "address {address} was registered without a key from {}; only that host can remove it (or let its lease expire)",
                owner.registrant_ip
            )));
        }
        return Ok(());
    }
    let owner_id = signing::node_id(owner.public_key);
    match attempt.verified_key {
        None => {
            return Err(Error::PermissionDenied(format!(
                "address {address} is registered by node {owner_id}; removing it needs a signature by that key"
            )));
        }
        Some(k) if k != owner.public_key => {
            return Err(Error::PermissionDenied(format!(
                "address {address} is registered by node {owner_id}; the signature is by another key"
            )));
        }
        Some(_) => {}
    }
    if attempt.timestamp_ms <= owner.last_signed_ts_ms {
        return Err(replayed(attempt.timestamp_ms, owner.last_signed_ts_ms));
    }
    Ok(())
}

pub(crate) fn replayed(ts: u64, last: u64) -> Error {
    Error::PermissionDenied(format!(
        "replayed or out-of-order request: timestamp_unix_ms {ts} is not newer than the last one accepted for this address ({last})"
    ))
}

#[cfg(test)]
mod tests;
