use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use tonic::Code;

use super::*;

const WINDOW: u64 = 60_000;
const REG: RegistryId = [5; 16];

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn pk(k: &SigningKey) -> Vec<u8> {
    k.verifying_key().to_bytes().to_vec()
}

fn code(r: Result<(), Error>) -> Option<Code> {
    r.err().map(|e| tonic::Status::from(e).code())
}

fn owner(public_key: &[u8], last: u64) -> Owner<'_> {
    Owner { public_key, last_signed_ts_ms: last, registrant_ip: "10.0.0.1", pending: false }
}

fn pending_owner(public_key: &[u8], last: u64) -> Owner<'_> {
    Owner { pending: true, ..owner(public_key, last) }
}

proptest! {
    #[test]
    fn a_different_key_or_no_key_never_refreshes_a_key_bound_address(a in 1u8..=255, b in 1u8..=255, ts in any::<u64>(), last in any::<u64>()) {
        prop_assume!(a != b);
        let owner_key = pk(&key(a));
        let o = owner(&owner_key, last);
        let other = SignedClaim { public_key: pk(&key(b)), timestamp_ms: ts };
        prop_assert_eq!(code(may_register(&o, Some(&other), "10.0.0.1", "a:1")), Some(Code::PermissionDenied));
        prop_assert_eq!(code(may_register(&o, None, "10.0.0.1", "a:1")), Some(Code::PermissionDenied));
    }

    #[test]
    fn any_key_may_claim_a_pending_registration_but_no_unsigned_request_may(a in 0u8..=255, b in 1u8..=255, ts in any::<u64>(), last in any::<u64>(), ip in "[0-9.]{1,15}") {
        prop_assume!(a != b);
        // a == 0 stands for an unsigned pending registration.
        let owner_key = if a == 0 { Vec::new() } else { pk(&key(a)) };
        let o = pending_owner(&owner_key, last);
        let claim = SignedClaim { public_key: pk(&key(b)), timestamp_ms: ts };
        prop_assert!(may_register(&o, Some(&claim), &ip, "a:1").is_ok(), "a key takes over an unverified claim");
        if a != 0 {
            prop_assert_eq!(code(may_register(&o, None, &ip, "a:1")), Some(Code::PermissionDenied));
        }
    }

    #[test]
    fn the_owner_refreshes_only_with_a_newer_timestamp(a in 1u8..=255, ts in any::<u64>(), last in any::<u64>()) {
        let owner_key = pk(&key(a));
        let claim = SignedClaim { public_key: owner_key.clone(), timestamp_ms: ts };
        let verdict = may_register(&owner(&owner_key, last), Some(&claim), "10.9.9.9", "a:1");
        prop_assert_eq!(verdict.is_ok(), ts > last);
    }

    #[test]
    fn an_unsigned_address_is_refreshed_or_claimed_only_from_its_registrant_ip(b in 1u8..=255, ts in any::<u64>(), ip in "[0-9.]{1,15}") {
        let o = owner(&[], 0);
        let claim = SignedClaim { public_key: pk(&key(b)), timestamp_ms: ts };
        let from_registrant = ip == "10.0.0.1";
        prop_assert_eq!(may_register(&o, None, &ip, "a:1").is_ok(), from_registrant);
        prop_assert_eq!(may_register(&o, Some(&claim), &ip, "a:1").is_ok(), from_registrant);
    }

    #[test]
    fn an_unsigned_registration_is_removed_only_from_its_registrant_ip(ip in "[0-9.]{1,15}") {
        let o = owner(&[], 0);
        let attempt = RemoveAttempt { timestamp_ms: 0, verified_key: None, client_ip: &ip };
        prop_assert_eq!(may_remove(&o, &attempt, "a:1").is_ok(), ip == "10.0.0.1");
    }

    #[test]
    fn a_key_bound_registration_is_removed_only_by_a_newer_signature_of_its_key(
        a in 1u8..=255, b in 1u8..=255, ts in 1u64..u64::MAX, last in any::<u64>(),
    ) {
        let owner_key = key(a);
        let owner_pk = pk(&owner_key);
        let o = owner(&owner_pk, last);
        let own = signing::sign(&owner_key, &signing::remove_payload(&REG, "a:1", ts));
        prop_assert!(verify_remove(&REG, &owner_pk, "a:1", ts, &own).is_ok());
        let attempt = RemoveAttempt { timestamp_ms: ts, verified_key: Some(&owner_pk), client_ip: "10.9.9.9" };
        prop_assert_eq!(may_remove(&o, &attempt, "a:1").is_ok(), ts > last);
        // Signed for another address, or by another key: never.
        let elsewhere = signing::sign(&owner_key, &signing::remove_payload(&REG, "b:1", ts));
        prop_assert!(verify_remove(&REG, &owner_pk, "a:1", ts, &elsewhere).is_err());
        let other_pk = pk(&key(b));
        if a != b {
            let forged = signing::sign(&key(b), &signing::remove_payload(&REG, "a:1", ts));
            prop_assert!(verify_remove(&REG, &owner_pk, "a:1", ts, &forged).is_err());
            // A signature checked against a key the owner no longer has.
            let stale = RemoveAttempt { verified_key: Some(&other_pk), ..attempt };
            prop_assert!(may_remove(&o, &stale, "a:1").is_err());
        }
        let unsigned = RemoveAttempt { verified_key: None, client_ip: "10.0.0.1", ..attempt };
        prop_assert!(may_remove(&o, &unsigned, "a:1").is_err(), "even from the registrant IP");
    }

    #[test]
    fn a_register_signature_covers_every_field(a in 1u8..=255, field in 0usize..3, skew in 0u64..WINDOW) {
        let k = key(a);
        let public_key = pk(&k);
        let now = 1_800_000_000_000u64;
        let ts = now - skew;
        let signature = signing::sign(&k, &signing::register_payload(&REG, "a:1", &public_key, 60, ts));
        let good = RegisterFields { address: "a:1", public_key: &public_key, signature: &signature, ttl_seconds: 60, timestamp_ms: ts };
        let claim = check_register(&REG, &good, false, now, WINDOW).unwrap();
        prop_assert_eq!(claim, Some(SignedClaim { public_key: public_key.clone(), timestamp_ms: ts }));
        let tampered = match field {
            0 => RegisterFields { address: "b:1", ..good },
            1 => RegisterFields { ttl_seconds: 61, ..good },
            _ => RegisterFields { timestamp_ms: ts - 1, ..good },
        };
        prop_assert_eq!(check_register(&REG, &tampered, false, now, WINDOW).err().map(|e| tonic::Status::from(e).code()), Some(Code::PermissionDenied));
        // Signed for this registry: worthless at another one.
        prop_assert_eq!(check_register(&[6; 16], &good, false, now, WINDOW).err().map(|e| tonic::Status::from(e).code()), Some(Code::PermissionDenied));
    }
}

#[test]
fn stale_or_missing_timestamps_and_malformed_fields_are_refused_with_their_code() {
    let now = 1_800_000_000_000u64;
    assert_eq!(code(check_fresh(0, now, WINDOW)), Some(Code::InvalidArgument));
    assert_eq!(code(check_fresh(now - WINDOW - 1, now, WINDOW)), Some(Code::PermissionDenied));
    assert_eq!(code(check_fresh(now + WINDOW + 1, now, WINDOW)), Some(Code::PermissionDenied));
    assert!(check_fresh(now + WINDOW, now, WINDOW).is_ok());
    let unsigned = RegisterFields { address: "a:1", public_key: &[], signature: &[], ttl_seconds: 0, timestamp_ms: 0 };
    assert_eq!(check_register(&REG, &unsigned, false, now, WINDOW).unwrap(), None);
    let required = check_register(&REG, &unsigned, true, now, WINDOW).err().map(|e| tonic::Status::from(e).code());
    assert_eq!(required, Some(Code::Unauthenticated));
    let short_key = RegisterFields { public_key: &[1; 31], signature: &[0; 64], ..unsigned };
    assert_eq!(
        check_register(&REG, &short_key, false, now, WINDOW).err().map(|e| tonic::Status::from(e).code()),
        Some(Code::InvalidArgument)
    );
    assert_eq!(code(check_remove(&[0; 10], now, now, WINDOW)), Some(Code::InvalidArgument));
    assert!(check_remove(&[], 0, now, WINDOW).is_ok(), "an unsigned remove is judged by the registrant IP");
}
