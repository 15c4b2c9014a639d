//! Peer addresses: `host:port`, where host is a DNS name, an IPv4 address or a
//! bracketed IPv6 address, and port is 1-65535.
//!
//! Services key peers by the canonical spelling ([`canonicalize`]): DNS names
//! lower-cased and IP addresses in their standard form, so `Node1:3000` and
//! `node1:3000` are one registration, not two.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest address accepted: a 253-byte DNS name, a colon and a 5-digit port.
pub const MAX_ADDRESS_LEN: usize = 253 + 1 + 5;

/// Why an address was rejected. The text is meant for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("is empty")]
    Empty,
    #[error("is {0} bytes long; at most {MAX_ADDRESS_LEN} are allowed")]
    TooLong(usize),
    #[error("{0:?} has no port: expected host:port, e.g. node1:3000 or [::1]:3000")]
    MissingPort(String),
    #[error("port {0:?} is not a number in 1-65535")]
    BadPort(String),
    #[error("host is empty")]
    EmptyHost,
    #[error("IPv6 host {0:?} is not a valid IPv6 address")]
    BadIpv6(String),
    #[error("IPv6 hosts must be bracketed, e.g. [{0}]:3000")]
    UnbracketedIpv6(String),
    #[error("host {0:?} is not a valid DNS name or IPv4 address")]
    BadHost(String),
    #[error(
        "host {0:?} is a numeric IPv4 spelling (hex, octal or shortened); write the address as four decimal numbers, e.g. 127.0.0.1"
    )]
    NumericHost(String),
}

/// The host part of a validated address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Dns(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// A validated `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    pub host: Host,
    pub port: u16,
}

impl PeerAddress {
    /// Parses and validates `input`; see the module docs for the syntax.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        if input.is_empty() {
            return Err(AddressError::Empty);
        }
        if input.len() > MAX_ADDRESS_LEN + 2 {
            return Err(AddressError::TooLong(input.len()));
        }
        let (host, port) = if let Some(rest) = input.strip_prefix('[') {
            let Some((v6, port)) = rest.split_once("]:") else {
                return if rest.contains(']') {
                    Err(AddressError::MissingPort(input.to_string()))
                } else {
                    Err(AddressError::BadIpv6(rest.to_string()))
                };
            };
            let ip: Ipv6Addr = v6.parse().map_err(|_| AddressError::BadIpv6(v6.to_string()))?;
            // One endpoint, one spelling: an IPv4-mapped IPv6 address is its IPv4 address.
            match ip.to_ipv4_mapped() {
                Some(v4) => (Host::V4(v4), port),
                None => (Host::V6(ip), port),
            }
        } else {
            let Some((host, port)) = input.rsplit_once(':') else {
                return Err(AddressError::MissingPort(input.to_string()));
            };
            if host.contains(':') {
                return Err(AddressError::UnbracketedIpv6(host.to_string()));
            }
            (parse_host(host)?, port)
        };
        let port = parse_port(port)?;
        Ok(PeerAddress { host, port })
    }
}

impl std::fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Dns(name) => write!(f, "{name}:{}", self.port),
            Host::V4(ip) => write!(f, "{ip}:{}", self.port),
            Host::V6(ip) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}

/// Validates `input` and returns its canonical spelling (DNS names
/// lower-cased, IP addresses in their standard form).
pub fn canonicalize(input: &str) -> Result<String, AddressError> {
    PeerAddress::parse(input).map(|a| a.to_string())
}

/// The URL a gRPC client dials for `endpoint`, given as `host:port` or
/// already as a URL (`http://…`, `https://…`).
pub fn grpc_url(endpoint: &str) -> String {
    if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") }
}

fn parse_port(port: &str) -> Result<u16, AddressError> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddressError::BadPort(port.to_string()));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(AddressError::BadPort(port.to_string())),
    }
}

fn parse_host(host: &str) -> Result<Host, AddressError> {
    if host.is_empty() {
        return Err(AddressError::EmptyHost);
    }
    // A host made only of digits and dots must be a dotted-quad IPv4 address;
    // `1.2.3` or `999.1.1.1` are typos, not DNS names.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host.parse::<Ipv4Addr>().map(Host::V4).map_err(|_| AddressError::BadHost(host.to_string()));
    }
    // As URL parsers do (WHATWG "ends in a number"): a name whose last label
    // is a number would be read as IPv4 by resolvers (`0x7f.1`, `127.1`,
    // `0x7f000001`), giving one endpoint many spellings.
    let last = host.rsplit('.').next().unwrap_or(host);
    let hex = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X"));
    if (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
        || hex.is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(AddressError::NumericHost(host.to_string()));
    }
    if is_dns_name(host) {
        Ok(Host::Dns(host.to_ascii_lowercase()))
    } else {
        Err(AddressError::BadHost(host.to_string()))
    }
}

/// RFC 1123 host name: dot-separated labels of 1-63 letters, digits and
/// hyphens, not starting or ending with a hyphen, 253 bytes at most. A single
/// trailing dot (fully qualified form) is not accepted, to keep one spelling.
fn is_dns_name(name: &str) -> bool {
    if name.len() > 253 {
        return false;
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_three_host_kinds() {
        assert_eq!(canonicalize("node1:3000").unwrap(), "node1:3000");
        assert_eq!(canonicalize("Node-1.Example.COM:1").unwrap(), "node-1.example.com:1");
        assert_eq!(canonicalize("127.0.0.1:65535").unwrap(), "127.0.0.1:65535");
        assert_eq!(canonicalize("[::1]:3000").unwrap(), "[::1]:3000");
        assert_eq!(canonicalize("[2001:DB8:0:0::1]:80").unwrap(), "[2001:db8::1]:80");
        assert_eq!(grpc_url("node1:3000"), "http://node1:3000");
        assert_eq!(grpc_url("https://node1:3000"), "https://node1:3000");
    }

    #[test]
    fn numeric_ipv4_spellings_are_refused_and_mapped_ipv6_is_ipv4() {
        for input in
            ["0x7f.1:3000", "0x7f000001:3000", "0X7F000001:3000", "0x7f.0.0.1:3000", "node.1:3000", "a.0x:3000"]
        {
            assert!(matches!(PeerAddress::parse(input), Err(AddressError::NumericHost(_))), "{input}");
        }
        // Digits-and-dots forms that are not dotted quads stay typos.
        for input in ["127.1:3000", "2130706433:3000", "017.0.0.1:3000"] {
            assert!(PeerAddress::parse(input).is_err(), "{input}");
        }
        assert_eq!(canonicalize("[::ffff:127.0.0.1]:3000").unwrap(), "127.0.0.1:3000");
        assert_eq!(canonicalize("[::FFFF:7f00:1]:3000").unwrap(), "127.0.0.1:3000");
        assert_eq!(canonicalize("0xnode.example:1").unwrap(), "0xnode.example:1", "not hex: a name");
    }

    #[test]
    fn rejects_each_kind_of_malformed_address() {
        use AddressError::*;
        type Expect = fn(&AddressError) -> bool;
        let cases: &[(&str, Expect)] = &[
            ("", |e| matches!(e, Empty)),
            ("node1", |e| matches!(e, MissingPort(_))),
            ("node1:", |e| matches!(e, BadPort(_))),
            ("node1:0", |e| matches!(e, BadPort(_))),
            ("node1:65536", |e| matches!(e, BadPort(_))),
            ("node1:+80", |e| matches!(e, BadPort(_))),
            ("node1:030000", |e| matches!(e, BadPort(_))),
            (":3000", |e| matches!(e, EmptyHost)),
            ("::1:3000", |e| matches!(e, UnbracketedIpv6(_))),
            ("[::g]:3000", |e| matches!(e, BadIpv6(_))),
            ("[::1]", |e| matches!(e, MissingPort(_))),
            ("[::1:3000", |e| matches!(e, BadIpv6(_))),
            ("999.1.1.1:3000", |e| matches!(e, BadHost(_))),
            ("1.2.3:3000", |e| matches!(e, BadHost(_))),
            ("-node:3000", |e| matches!(e, BadHost(_))),
            ("node-:3000", |e| matches!(e, BadHost(_))),
            ("no_de:3000", |e| matches!(e, BadHost(_))),
            ("a..b:3000", |e| matches!(e, BadHost(_))),
            ("node.:3000", |e| matches!(e, BadHost(_))),
            ("nöde:3000", |e| matches!(e, BadHost(_))),
        ];
        for (input, is_expected) in cases {
            let err = PeerAddress::parse(input).expect_err(input);
            assert!(is_expected(&err), "{input:?} gave {err:?}");
        }
        let long = format!("{}:1", "a".repeat(300));
        assert!(matches!(PeerAddress::parse(&long), Err(TooLong(_))));
        let label64 = format!("{}.com:1", "a".repeat(64));
        assert!(matches!(PeerAddress::parse(&label64), Err(BadHost(_))));
    }

    proptest! {
        #[test]
        fn canonical_form_is_a_fixed_point(s in "\\PC{0,40}") {
            if let Ok(c) = canonicalize(&s) {
                prop_assert_eq!(canonicalize(&c).unwrap(), c);
            }
        }

        #[test]
        fn every_ipv4_socket_address_round_trips(ip in any::<[u8; 4]>(), port in 1u16..) {
            let ip = Ipv4Addr::from(ip);
            let s = format!("{ip}:{port}");
            let a = PeerAddress::parse(&s).unwrap();
            prop_assert_eq!(&a.host, &Host::V4(ip));
            prop_assert_eq!(a.port, port);
            prop_assert_eq!(a.to_string(), s);
        }

        #[test]
        fn every_ipv6_socket_address_round_trips(ip in any::<[u8; 16]>(), port in 1u16..) {
            let ip = Ipv6Addr::from(ip);
            prop_assume!(ip.to_ipv4_mapped().is_none());
            let s = format!("[{ip}]:{port}");
            prop_assert_eq!(canonicalize(&s).unwrap(), s);
        }

        #[test]
        fn generated_dns_names_are_accepted(
            labels in prop::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1..5),
            port in 1u16..,
        ) {
            let host = labels.join(".");
            let last = labels.last().map(String::as_str).unwrap_or("");
            prop_assume!(!last.bytes().all(|b| b.is_ascii_digit()) && !last.starts_with("0x"));
            let s = format!("{host}:{port}");
            prop_assert_eq!(canonicalize(&s).unwrap(), s);
        }

        #[test]
        fn port_out_of_range_is_rejected(port in 65536u32..1_000_000) {
            let s = format!("node:{port}");
            prop_assert!(matches!(PeerAddress::parse(&s), Err(AddressError::BadPort(_))));
        }
    }
}
