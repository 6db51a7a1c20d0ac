//! Container parsing on arbitrary bytes: `CompressedTensor::from_bytes` and
//! `Group::from_bytes` never panic, and whatever they accept is valid and
//! serializes back to exactly the input.
#![no_main]

use df11_fuzz::fix_crcs;
use df11_host::{CompressedTensor, Group};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let single = CompressedTensor::from_bytes(bytes);
    let group = Group::from_bytes(bytes);
    if let Ok(t) = &single {
        t.validate().expect("accepted tensor is valid");
        assert_eq!(t.to_bytes(), bytes, "tensor round trip");
        assert_eq!(t.serialized_len(), bytes.len() as u64);
        // A one-tensor container is also a group of one.
        assert_eq!(group.as_ref().expect("group parse of a one-tensor container").tensors, std::slice::from_ref(t));
    }
    if let Ok(g) = &group {
        g.validate().expect("accepted group is valid");
        assert_eq!(g.to_bytes(), bytes, "group round trip");
        assert_eq!(g.serialized_len(), bytes.len() as u64);
        assert_eq!(single.is_ok(), g.tensors.len() == 1);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let fixed = fix_crcs(data);
    if fixed != data {
        check(&fixed);
    }
});
