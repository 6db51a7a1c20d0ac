//! Library inputs that once misbehaved (found by fuzzing or by review), kept
//! as tests so they stay fixed. Each names what was wrong.

use df11_host::gpu::GroupLayout;
use df11_host::{CompressedTensor, EncodeOptions, Error, Group, Layout, compress_with};

/// An empty tensor must have `max_len = 0` (`docs/FORMAT.md` §5). The parser
/// accepted an empty record carrying a complete 1-bit code, so two
/// serializations of the same empty tensor both parsed.
#[test]
fn empty_tensor_with_a_code_is_rejected() {
    // Warp too: the GPU layout's own validation is what this once got past.
    for layout in [Layout::Lanes, Layout::Warp] {
        let mut t = compress_with(&[], &EncodeOptions { layout, ..Default::default() });
        assert_eq!(t.max_len, 0);
        t.code_lengths[126] = 1;
        t.code_lengths[127] = 1;
        t.max_len = 1;
        let e = t.validate().expect_err("empty tensor with max_len 1");
        assert!(matches!(e, Error::Invalid { field: "max_len", .. }), "{layout:?}: {e}");
        assert!(CompressedTensor::from_bytes(&t.to_bytes()).is_err());
        assert!(GroupLayout::new(&Group { tensors: vec![t] }).is_err());
    }
}

/// `record_len` was said to be safe from overflow for any header value but
/// summed in plain `u64`: a record claiming 2^64 − 1 elements overflowed in
/// `reseal_crcs` (found by the `in_place` fuzz target within seconds), and
/// so did `serialized_len` of a tensor or group holding such a count. The
/// sums saturate now, and the parsers reject such records as before.
#[test]
fn huge_element_counts_do_not_overflow_record_lengths() {
    use df11_host::container::reseal_crcs;
    use df11_host::decode::{DecodeOptions, Runs, decode_container_into};
    for layout in [Layout::Lanes, Layout::Warp] {
        let t =
            compress_with(&[0x3F80, 0x4000, 0xBF80, 0x3F80, 0x0001], &EncodeOptions { layout, ..Default::default() });
        let mut bytes = t.to_bytes();
        // The record's num_elements, right after the 16-byte container header.
        bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        reseal_crcs(&mut bytes);
        let e = CompressedTensor::from_bytes(&bytes).expect_err("2^64 - 1 elements");
        assert!(matches!(e, Error::Invalid { field: "num_elements", .. }), "{layout:?}: {e}");
        let opts = DecodeOptions::default();
        assert_eq!(decode_container_into(&bytes, &mut [0; 5], &opts), Err(e.clone()));
        assert_eq!(Runs::new(&bytes, &opts).err(), Some(e));

        let mut huge = t.clone();
        huge.num_elements = u64::MAX;
        assert_eq!(huge.serialized_len(), u64::MAX);
        assert_eq!(Group { tensors: vec![t, huge] }.serialized_len(), u64::MAX);
    }
}
