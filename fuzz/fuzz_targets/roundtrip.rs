//! Round trip of arbitrary bf16 data: encode with a segment_rows (1..=8, so
//! small inputs span several segments) and a layout taken from the input
//! (lanes9 exactly, and as the encoder chooses), serialize, parse and
//! reference-decode; the bits must come back exactly.
#![no_main]

use df11_host::encode::compress_exact;
use df11_host::{CompressedTensor, EncodeOptions, Group, Layout, compress_with, decode_reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let segment_rows = u32::from(first % 8) + 1;
    let bits: Vec<u16> = rest.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let layout = [Layout::Warp, Layout::Lanes, Layout::Lanes9, Layout::Lanes9][usize::from(first >> 3 & 3)];
    let opts = EncodeOptions { segment_rows, layout };
    let t = if first & 32 == 0 { compress_exact(&bits, &opts) } else { compress_with(&bits, &opts) };
    t.validate().expect("encoder output is valid");
    let bytes = t.to_bytes();
    let parsed = CompressedTensor::from_bytes(&bytes).expect("encoder output parses");
    assert_eq!(parsed, t);
    assert_eq!(decode_reference(&parsed).expect("encoder output decodes"), bits);
    // The same tensor twice as a group.
    let g = Group { tensors: vec![t.clone(), t] };
    let g2 = Group::from_bytes(&g.to_bytes()).expect("group parses");
    assert_eq!(g2, g);
});
