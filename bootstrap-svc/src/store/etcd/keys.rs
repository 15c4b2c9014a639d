//! The registry's keys in etcd, all under one prefix (`--etcd-prefix`), so
//! several registries can share a cluster and one watch sees everything:
//!
//! - `{prefix}id`: the registry id (16 random bytes), created once by
//!   whichever server starts first; every server on the prefix signs and
//!   verifies with it.
//! - `{prefix}l/{address}`: a listed (verified) registration's record
//!   ([`crate::store::record::PeerRecord`]), on a lease that ends with it.
//!   GetPeers pages are ranges over this prefix, in address order.
//! - `{prefix}p/{address}`: a registration pending verification (never
//!   listed, never announced).
//! - `{prefix}t/{address}`: the replay floor of a signed registration
//!   ([`Tomb`]), on a lease that ends when the floor's timestamp leaves the
//!   freshness window (after that the window itself refuses a replay).
//! - `{prefix}e`: the events of the last write, rewritten by every write
//!   transaction that announces something ([`EventBatch`]). Watching it from
//!   a revision replays exactly what every server announced, in commit
//!   order. A lease expiry is the one change no server writes: etcd deletes
//!   the record, and a deleted `l/` key in a revision without an `e` write
//!   is an EXPIRED event.

use p2p_proto::bootstrap::PeerEvent;

/// The keys of one registry.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: Vec<u8>,
}

/// Which of an address's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Listed,
    Pending,
    Tomb,
}

impl Kind {
    fn tag(self) -> &'static [u8] {
        match self {
            Kind::Listed => b"l/",
            Kind::Pending => b"p/",
            Kind::Tomb => b"t/",
        }
    }
}

impl Keys {
    /// `prefix` should end with `/`; one is added if it does not.
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.as_bytes().to_vec();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        Keys { prefix }
    }

    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    pub fn id(&self) -> Vec<u8> {
        [self.prefix.as_slice(), b"id"].concat()
    }

    pub fn events(&self) -> Vec<u8> {
        [self.prefix.as_slice(), b"e"].concat()
    }

    pub fn key(&self, kind: Kind, address: &str) -> Vec<u8> {
        [self.prefix.as_slice(), kind.tag(), address.as_bytes()].concat()
    }

    /// The first key of `kind` (the range start of all of them).
    pub fn start(&self, kind: Kind) -> Vec<u8> {
        [self.prefix.as_slice(), kind.tag()].concat()
    }

    /// The key after every key of `kind`.
    pub fn end(&self, kind: Kind) -> Vec<u8> {
        prefix_end(&self.start(kind))
    }

    /// The first key of `kind` after `address`.
    pub fn after(&self, kind: Kind, address: &str) -> Vec<u8> {
        let mut k = self.key(kind, address);
        k.push(0);
        k
    }

    /// What a key of this registry is.
    pub fn parse<'a>(&self, key: &'a [u8]) -> Option<Parsed<'a>> {
        let rest = key.strip_prefix(self.prefix.as_slice())?;
        if rest == b"e" {
            return Some(Parsed::Events);
        }
        for kind in [Kind::Listed, Kind::Pending, Kind::Tomb] {
            if let Some(addr) = rest.strip_prefix(kind.tag()) {
                return std::str::from_utf8(addr).ok().map(|a| Parsed::Address(kind, a));
            }
        }
        None
    }
}

/// A key of the registry, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    Events,
    Address(Kind, &'a str),
}

/// The end of the range of every key starting with `prefix` (etcd's convention).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: every key from the prefix on.
    vec![0]
}

/// The replay floor of a signed registration: a request signed by `key`
/// with a timestamp not newer than `ts_ms` is a replay.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tomb {
    #[prost(uint64, tag = "1")]
    pub ts_ms: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    /// When the floor stops mattering (`ts_ms` + the freshness window).
    #[prost(uint64, tag = "3")]
    pub until_ms: u64,
}

/// The events one write announced.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventBatch {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<PeerEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_and_ranges_cover_their_kind() {
        let k = Keys::new("/reg");
        assert_eq!(k.key(Kind::Listed, "1.2.3.4:5"), b"/reg/l/1.2.3.4:5");
        assert_eq!(k.parse(&k.key(Kind::Pending, "a:1")), Some(Parsed::Address(Kind::Pending, "a:1")));
        assert_eq!(k.parse(&k.events()), Some(Parsed::Events));
        assert_eq!(k.parse(&k.id()), None);
        assert_eq!(k.parse(b"/other/l/a:1"), None);
        let (start, end) = (k.start(Kind::Listed), k.end(Kind::Listed));
        for addr in ["a:1", "zzz:65535", "\u{7f}:1"] {
            let key = k.key(Kind::Listed, addr);
            assert!(start <= key && key < end, "{addr}");
        }
        assert!(k.key(Kind::Pending, "a:1") >= end);
        assert!(k.after(Kind::Listed, "a:1") > k.key(Kind::Listed, "a:1"));
        assert!(k.after(Kind::Listed, "a:1") < k.key(Kind::Listed, "a:10"));
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
