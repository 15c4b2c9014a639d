//! Address parsing: never panics, and the canonical form is a fixed point
//! that parses to the same address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2p_proto::address::{PeerAddress, canonicalize};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(a) = PeerAddress::parse(s) {
        let c = a.to_string();
        assert_eq!(canonicalize(&c).as_deref(), Ok(c.as_str()));
        assert_eq!(PeerAddress::parse(&c), Ok(a));
    }
});
