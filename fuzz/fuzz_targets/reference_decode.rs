//! Parse then reference-decode arbitrary bytes: never a panic, and a
//! successful decode always matches the stored data CRC and the element count.
#![no_main]

use df11_fuzz::{fix_crcs, reference_bits};
use df11_host::container::data_crc;
use df11_host::{Error, Group, decode_reference, decode_reference_into};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let Ok(g) = Group::from_bytes(bytes) else { return };
    for t in &g.tensors {
        match decode_reference(t) {
            Ok(bits) => {
                assert_eq!(bits.len() as u64, t.num_elements);
                assert_eq!(data_crc(&bits), t.data_crc);
            }
            Err(Error::Checksum { what: "data", .. } | Error::CorruptStream { .. }) => {}
            Err(e) => panic!("unexpected error from a parsed tensor: {e:?}"),
        }
        // Decoding with the CRC fixed up reaches the paths past the checksum.
        let _ = reference_bits(t);
        // A wrong output length is an error, not a panic or a short write.
        let mut short = vec![0u16; (t.num_elements as usize).saturating_sub(1)];
        if t.num_elements > 0 {
            assert!(matches!(decode_reference_into(t, &mut short), Err(Error::OutputLength { .. })));
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
