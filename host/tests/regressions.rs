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
