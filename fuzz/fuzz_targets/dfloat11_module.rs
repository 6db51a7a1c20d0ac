//! The DFloat11 module decoder (`df11::dfloat11::decode_module`) on arbitrary
//! arrays: never a panic; a decoded module's pieces tile its output.
//!
//! Input: six little-endian `u16` lengths, then the arrays back to back in
//! the order of `ARRAY_NAMES` (the last one takes whatever is left).
#![no_main]

use df11::dfloat11::{ModuleArrays, decode_module};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let (lens, mut rest) = data.split_at(12);
    let mut arrays: [&[u8]; 6] = [&[]; 6];
    for (i, a) in arrays.iter_mut().enumerate() {
        let len = if i == 5 { rest.len() } else { usize::from(u16::from_le_bytes([lens[2 * i], lens[2 * i + 1]])) };
        let (head, tail) = rest.split_at(len.min(rest.len()));
        *a = head;
        rest = tail;
    }
    let m = ModuleArrays {
        luts: arrays[0],
        encoded_exponent: arrays[1],
        sign_mantissa: arrays[2],
        output_positions: arrays[3],
        gaps: arrays[4],
        split_positions: arrays[5],
    };
    if let Ok(d) = decode_module(&m) {
        assert_eq!(d.bits.len(), m.sign_mantissa.len(), "one element per sign+mantissa byte");
        let mut at = 0;
        for p in &d.pieces {
            assert_eq!(p.start, at, "pieces are contiguous");
            at = p.end;
        }
        assert_eq!(at, d.bits.len(), "pieces cover the output");
    }
});
