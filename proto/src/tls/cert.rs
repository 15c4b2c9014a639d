//! Certificates that prove a node's identity, as libp2p's TLS spec defines
//! them: a self-signed X.509 certificate on a fresh P-256 key (never the
//! identity key), carrying the libp2p Public Key Extension (OID
//! 1.3.6.1.4.1.53594.1.1) with the node's ed25519 identity key and its
//! signature over `"libp2p-tls-handshake:" || SubjectPublicKeyInfo` of the
//! certificate key. So the TLS handshake (which proves possession of the
//! certificate key) also proves possession of the identity key, and the
//! node id follows from the key ([`crate::signing::node_id`]).
//!
//! Our certificates are valid libp2p TLS certificates, with two choices the
//! spec leaves open: the extension is not marked critical (the spec says it
//! MAY be), so a standard TLS client (grpcio, curl) can pin a node's
//! certificate file without rejecting it for an unknown critical extension,
//! and the subject alternative name is the node id, so such a client has a
//! name to check. Our verifier never depends on either: it requires the
//! extension and derives the id from it.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rcgen::PublicKeyData;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The libp2p Public Key Extension's OID (allocated by IANA to libp2p).
pub const EXTENSION_OID: [u64; 9] = [1, 3, 6, 1, 4, 1, 53594, 1, 1];
/// What the identity key signs, before the certificate key's SPKI.
pub const SIGNING_PREFIX: &[u8] = b"libp2p-tls-handshake:";
/// libp2p's protobuf `PublicKey { Type = Ed25519 (1), Data = 32 bytes }`
/// header; an ed25519 key encodes as exactly these 4 bytes and the key.
const ED25519_PROTOBUF_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x20];
/// Largest certificate we parse; ours are about 500 bytes.
pub const MAX_CERT_BYTES: usize = 4096;

/// The verified identity of the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// The ed25519 identity key.
    pub public_key: [u8; 32],
    /// Hex of the first 20 bytes of SHA-256(public key), as everywhere else.
    pub node_id: String,
}

impl PeerIdentity {
    pub fn from_key(public_key: [u8; 32]) -> Self {
        PeerIdentity { node_id: crate::signing::node_id(&public_key), public_key }
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.node_id)
    }
}

/// Why a presented certificate does not prove an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("the certificate is {0} bytes; at most {MAX_CERT_BYTES}")]
    TooLarge(usize),
    #[error("the certificate is not valid DER X.509")]
    BadDer,
    #[error("the certificate is outside its validity period")]
    Expired,
    #[error("the certificate's signature algorithm is not ECDSA P-256/SHA-256 or Ed25519")]
    UnsupportedAlgorithm,
    #[error("the certificate's self-signature does not verify")]
    BadSelfSignature,
    #[error("the certificate has no libp2p public key extension")]
    MissingExtension,
    #[error("the certificate has the libp2p public key extension twice")]
    DuplicateExtension,
    #[error("the certificate has a critical extension we do not understand")]
    UnknownCriticalExtension,
    #[error("the libp2p public key extension is malformed")]
    BadExtension,
    #[error("the identity key is not an ed25519 key")]
    NotEd25519,
    #[error("the identity key's signature over the certificate key does not verify")]
    BadIdentitySignature,
    #[error("expected node {expected}, but the certificate proves node {got}")]
    WrongNode { expected: String, got: String },
}

/// A node's certificate and the key it was made with.
#[derive(Debug)]
pub struct Certified {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    /// The certificate in PEM, for operators who pin it with standard tools.
    pub pem: String,
    /// The certificate's (not the identity's) private key in PKCS#8 PEM, for
    /// standard clients that present the certificate (`grpcurl -cert -key`).
    pub key_pem: String,
}

/// Makes a certificate for `identity` on a fresh P-256 key.
pub fn generate(identity: &SigningKey) -> Result<Certified, rcgen::Error> {
    let cert_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let node_id = crate::signing::node_id(&identity.verifying_key().to_bytes());
    let mut params = rcgen::CertificateParams::new(vec![node_id.clone()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, node_id);
    params.custom_extensions.push(extension(identity, &cert_key.subject_public_key_info()));
    let cert = params.self_signed(&cert_key)?;
    Ok(Certified {
        pem: cert.pem(),
        key_pem: cert_key.serialize_pem(),
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert_key.serialize_der())),
    })
}

/// The libp2p Public Key Extension for a certificate key with `spki`.
fn extension(identity: &SigningKey, spki: &[u8]) -> rcgen::CustomExtension {
    let mut message = SIGNING_PREFIX.to_vec();
    message.extend_from_slice(spki);
    let signature = identity.sign(&message).to_bytes().to_vec();
    let mut public_key = ED25519_PROTOBUF_PREFIX.to_vec();
    public_key.extend_from_slice(&identity.verifying_key().to_bytes());
    let content = yasna::encode_der(&(public_key, signature));
    let mut ext = rcgen::CustomExtension::from_oid_content(&EXTENSION_OID, content);
    ext.set_criticality(false);
    ext
}

/// A certificate taken apart: the identity it claims and what proves it.
/// [`Parsed::check`] decides whether it does.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub identity: PeerIdentity,
    /// The identity key's signature over the certificate key.
    signature: ed25519_dalek::Signature,
    cert: X509Certificate<'a>,
}

impl Parsed<'_> {
    /// The certificate key's SubjectPublicKeyInfo (DER), which signs the
    /// TLS handshake.
    pub fn spki(&self) -> &[u8] {
        self.cert.tbs_certificate.subject_pki.raw
    }

    /// Whether the certificate proves its identity at `now`: inside its
    /// validity period, self-signed (ECDSA P-256/SHA-256 or Ed25519), and
    /// the certificate key signed by the identity key.
    pub fn check(&self, now: UnixTime) -> Result<(), CertError> {
        let at = x509_parser::time::ASN1Time::from_timestamp(now.as_secs().min(i64::MAX as u64) as i64)
            .map_err(|_| CertError::Expired)?;
        if !self.cert.validity().is_valid_at(at) {
            return Err(CertError::Expired);
        }
        verify_self_signature(&self.cert)?;
        let key = VerifyingKey::from_bytes(&self.identity.public_key).map_err(|_| CertError::NotEd25519)?;
        let mut message = SIGNING_PREFIX.to_vec();
        message.extend_from_slice(self.spki());
        key.verify_strict(&message, &self.signature).map_err(|_| CertError::BadIdentitySignature)
    }
}

/// Checks that `der` is a certificate by the libp2p rules, valid at `now`,
/// and returns the identity it proves.
pub fn verify(der: &[u8], now: UnixTime) -> Result<Parsed<'_>, CertError> {
    let parsed = parse(der)?;
    parsed.check(now)?;
    Ok(parsed)
}

/// Takes a certificate apart without checking what it claims (see
/// [`verify`]): for a certificate a finished handshake already verified.
/// Refuses what is not one: oversized or bad DER, trailing bytes, the
/// extension missing or twice, an unknown critical extension, a key that
/// is not ed25519.
pub fn parse(der: &[u8]) -> Result<Parsed<'_>, CertError> {
    if der.len() > MAX_CERT_BYTES {
        return Err(CertError::TooLarge(der.len()));
    }
    let (rest, cert) = X509Certificate::from_der(der).map_err(|_| CertError::BadDer)?;
    if !rest.is_empty() {
        return Err(CertError::BadDer);
    }
    let oid = x509_parser::der_parser::oid::Oid::from(&EXTENSION_OID).map_err(|_| CertError::BadExtension)?;
    let mut found = None;
    for ext in cert.extensions() {
        if ext.oid == oid {
            if found.is_some() {
                return Err(CertError::DuplicateExtension);
            }
            found = Some(ext.value);
        } else if ext.critical && !understood(&ext.oid) {
            return Err(CertError::UnknownCriticalExtension);
        }
    }
    let content = found.ok_or(CertError::MissingExtension)?;
    let (public_key, signature): (Vec<u8>, Vec<u8>) =
        yasna::decode_der(content).map_err(|_| CertError::BadExtension)?;
    let key = public_key.strip_prefix(ED25519_PROTOBUF_PREFIX.as_slice()).ok_or(CertError::NotEd25519)?;
    let key: [u8; 32] = key.try_into().map_err(|_| CertError::NotEd25519)?;
    let signature = ed25519_dalek::Signature::from_slice(&signature).map_err(|_| CertError::BadIdentitySignature)?;
    Ok(Parsed { identity: PeerIdentity::from_key(key), signature, cert })
}

/// Critical extensions a certificate may carry besides ours (what rcgen
/// or common tools mark critical): basic constraints and key usage.
fn understood(oid: &x509_parser::der_parser::oid::Oid<'_>) -> bool {
    use x509_parser::oid_registry::{OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_KEY_USAGE};
    *oid == OID_X509_EXT_BASIC_CONSTRAINTS || *oid == OID_X509_EXT_KEY_USAGE
}

/// The certificate must be signed by its own key, with ECDSA P-256/SHA-256
/// or Ed25519 (SHA-1 and friends are refused).
fn verify_self_signature(cert: &X509Certificate<'_>) -> Result<(), CertError> {
    use x509_parser::oid_registry::{OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ED25519};
    let alg = &cert.signature_algorithm.algorithm;
    let algorithm: &dyn ring::signature::VerificationAlgorithm = if *alg == OID_SIG_ECDSA_WITH_SHA256 {
        &ring::signature::ECDSA_P256_SHA256_ASN1
    } else if *alg == OID_SIG_ED25519 {
        &ring::signature::ED25519
    } else {
        return Err(CertError::UnsupportedAlgorithm);
    };
    let key = &cert.tbs_certificate.subject_pki.subject_public_key.data;
    ring::signature::UnparsedPublicKey::new(algorithm, key.as_ref())
        .verify(cert.tbs_certificate.as_ref(), cert.signature_value.data.as_ref())
        .map_err(|_| CertError::BadSelfSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn a_generated_certificate_proves_its_identity_and_nothing_else() {
        let k = key(7);
        let c = generate(&k).unwrap();
        let v = verify(c.cert.as_ref(), now()).unwrap();
        assert_eq!(v.identity.public_key, k.verifying_key().to_bytes());
        assert_eq!(v.identity.node_id, crate::signing::node_id(&k.verifying_key().to_bytes()));
        assert!(c.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        // A fresh certificate key each time: the identity is the same, the certificate is not.
        let c2 = generate(&k).unwrap();
        assert_ne!(c.cert, c2.cert);
        assert_eq!(verify(c2.cert.as_ref(), now()).unwrap().identity, v.identity);
    }

    #[test]
    fn the_certificate_key_is_not_the_identity_key() {
        let k = key(9);
        let c = generate(&k).unwrap();
        let v = verify(c.cert.as_ref(), now()).unwrap();
        assert!(!v.spki().windows(32).any(|w| w == k.verifying_key().to_bytes()));
    }

    /// A certificate whose extension carries `identity` but whose signature
    /// was made by `signer` over the SPKI.
    fn forged(identity: &SigningKey, signer: &SigningKey) -> Vec<u8> {
        let cert_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut message = SIGNING_PREFIX.to_vec();
        message.extend_from_slice(&cert_key.subject_public_key_info());
        let signature = signer.sign(&message).to_bytes().to_vec();
        let mut public_key = ED25519_PROTOBUF_PREFIX.to_vec();
        public_key.extend_from_slice(&identity.verifying_key().to_bytes());
        let ext = rcgen::CustomExtension::from_oid_content(&EXTENSION_OID, yasna::encode_der(&(public_key, signature)));
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.custom_extensions.push(ext);
        params.self_signed(&cert_key).unwrap().der().to_vec()
    }

    #[test]
    fn claiming_someone_elses_key_without_their_signature_is_refused() {
        let victim = key(1);
        let attacker = key(2);
        assert_eq!(verify(&forged(&victim, &attacker), now()).unwrap_err(), CertError::BadIdentitySignature);
        assert!(verify(&forged(&attacker, &attacker), now()).is_ok());
    }

    #[test]
    fn a_signature_for_another_certificate_key_is_refused() {
        // The victim's genuine extension, lifted onto a certificate with the attacker's key.
        let victim = key(3);
        let genuine = generate(&victim).unwrap();
        let (_, parsed) = X509Certificate::from_der(genuine.cert.as_ref()).unwrap();
        let oid = x509_parser::der_parser::oid::Oid::from(&EXTENSION_OID).unwrap();
        let lifted = parsed.extensions().iter().find(|e| e.oid == oid).unwrap().value.to_vec();
        let attacker_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.custom_extensions.push(rcgen::CustomExtension::from_oid_content(&EXTENSION_OID, lifted));
        let stolen = params.self_signed(&attacker_key).unwrap();
        assert_eq!(verify(stolen.der(), now()).unwrap_err(), CertError::BadIdentitySignature);
    }

    #[test]
    fn missing_duplicate_or_unknown_critical_extensions_are_refused() {
        let k = key(4);
        let cert_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let plain = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap().self_signed(&cert_key).unwrap();
        assert_eq!(verify(plain.der(), now()).unwrap_err(), CertError::MissingExtension);

        let mut twice = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        twice.custom_extensions.push(extension(&k, &cert_key.subject_public_key_info()));
        twice.custom_extensions.push(extension(&k, &cert_key.subject_public_key_info()));
        let twice = twice.self_signed(&cert_key).unwrap();
        assert_eq!(verify(twice.der(), now()).unwrap_err(), CertError::DuplicateExtension);

        let mut critical = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        critical.custom_extensions.push(extension(&k, &cert_key.subject_public_key_info()));
        let mut unknown = rcgen::CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![0x05, 0x00]);
        unknown.set_criticality(true);
        critical.custom_extensions.push(unknown);
        let critical = critical.self_signed(&cert_key).unwrap();
        assert_eq!(verify(critical.der(), now()).unwrap_err(), CertError::UnknownCriticalExtension);
    }

    #[test]
    fn an_expired_or_not_yet_valid_certificate_is_refused() {
        let k = key(5);
        let cert_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.custom_extensions.push(extension(&k, &cert_key.subject_public_key_info()));
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let old = params.self_signed(&cert_key).unwrap();
        assert_eq!(verify(old.der(), now()).unwrap_err(), CertError::Expired);
        let in_2020 = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_600_000_000));
        assert!(verify(old.der(), in_2020).is_ok());
    }

    #[test]
    fn a_tampered_certificate_fails_its_self_signature() {
        let c = generate(&key(6)).unwrap();
        let mut bytes = c.cert.to_vec();
        // Flip a bit in the middle of the to-be-signed part (inside the SAN).
        let i = bytes.len() / 3;
        bytes[i] ^= 0x01;
        assert!(verify(&bytes, now()).is_err());
    }

    #[test]
    fn garbage_and_oversized_input_is_refused_without_panicking() {
        assert_eq!(verify(&[], now()).unwrap_err(), CertError::BadDer);
        assert_eq!(verify(&[0x30, 0x03, 0x02, 0x01], now()).unwrap_err(), CertError::BadDer);
        assert_eq!(verify(&vec![0u8; MAX_CERT_BYTES + 1], now()).unwrap_err(), CertError::TooLarge(MAX_CERT_BYTES + 1));
        let c = generate(&key(8)).unwrap();
        let mut trailing = c.cert.to_vec();
        trailing.push(0);
        assert_eq!(verify(&trailing, now()).unwrap_err(), CertError::BadDer);
    }

    proptest::proptest! {
        #[test]
        fn any_single_byte_change_is_refused_or_proves_the_same_identity(pos in 0usize..600, bit in 0u8..8) {
            let k = key(10);
            let c = generate(&k).unwrap();
            let mut bytes = c.cert.to_vec();
            let pos = pos % bytes.len();
            bytes[pos] ^= 1 << bit;
            if let Ok(v) = verify(&bytes, now()) {
                // Only bytes outside what is signed (e.g. the outer signature's DER
                // encoding slack) could change without being noticed; the identity
                // is never another one.
                proptest::prop_assert_eq!(v.identity.node_id, crate::signing::node_id(&k.verifying_key().to_bytes()));
            }
        }
    }
}
