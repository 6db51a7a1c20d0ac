//! The fast CPU decoders against the reference decoder on arbitrary bytes:
//! both `Err`, or both `Ok` with equal bits. With the CRC check off, the fast
//! decoder must still agree with the reference on the stream itself, so
//! mutated streams (which fail the data CRC) are compared bit for bit too.
#![no_main]

use df11_fuzz::{fix_crcs, reference_bits};
use df11_host::decode::{DecodeOptions, decode, decode_into};
use df11_host::{Group, decode_reference};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let Ok(g) = Group::from_bytes(bytes) else { return };
    for t in &g.tensors {
        let reference = decode_reference(t);
        let fast = decode(t, &DecodeOptions { parallel: false, ..Default::default() });
        let parallel = decode(t, &DecodeOptions::default());
        match (&reference, &fast) {
            (Ok(r), Ok(f)) => assert!(r == f, "fast decoder differs from the reference"),
            (Err(_), Err(_)) => {}
            _ => panic!("reference {:?} but fast {:?}", reference.as_ref().err(), fast.as_ref().err()),
        }
        assert_eq!(fast.is_ok(), parallel.is_ok(), "serial and parallel fast decoders disagree");
        if let (Ok(f), Ok(p)) = (&fast, &parallel) {
            assert!(f == p, "parallel fast decoder differs");
        }
        let unchecked = {
            let mut out = vec![0u16; t.num_elements as usize];
            decode_into(t, &mut out, &DecodeOptions { verify_crc: false, parallel: false }).map(|()| out)
        };
        match (reference_bits(t), unchecked) {
            (Ok(r), Ok(u)) => assert!(r == u, "fast decoder (no CRC check) differs from the reference"),
            (Err(_), Err(_)) => {}
            (r, u) => panic!("reference {:?} but fast without CRC check {:?}", r.err(), u.err()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let fixed = fix_crcs(data);
    if fixed != data {
        check(&fixed);
    }
});
