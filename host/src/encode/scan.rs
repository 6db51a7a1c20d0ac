//! The encoder's first pass: exponent histogram, sign+mantissa bytes and data
//! CRC in one sweep, so that the input is read from memory once for all three.

use crate::container::data_crc_append;
use df11_gpu::bits;
use df11_gpu::format::SYMBOLS;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per parallel task: small enough to balance, large enough that
/// merging its sub-histograms is cheap.
const TASK: usize = 1 << 16;

/// Elements per pass of the three steps: 16 KiB of input, so that the CRC
/// leaves it in the L1 cache for the other two.
const BLOCK: usize = 1 << 13;

/// What the first pass yields.
pub(crate) struct Scan {
    pub hist: [u64; SYMBOLS],
    pub crc: u32,
    pub sign_mantissa: Vec<u8>,
}

/// Histogram and CRC of a contiguous run of elements.
struct Part {
    hist: [u64; SYMBOLS],
    crc: u32,
    len: usize,
}

impl Part {
    const EMPTY: Part = Part { hist: [0; SYMBOLS], crc: 0, len: 0 };

    /// `self` followed by `next`: CRCs of consecutive runs combine exactly,
    /// so the result does not depend on how rayon splits the input.
    fn join(mut self, next: Part) -> Part {
        // Combining costs microseconds; rayon joins with empty parts often.
        if next.len == 0 {
            return self;
        }
        if self.len == 0 {
            return next;
        }
        self.hist.iter_mut().zip(next.hist).for_each(|(a, b)| *a += b);
        self.crc = crc32c::crc32c_combine(self.crc, next.crc, 2 * next.len);
        self.len += next.len;
        self
    }

    /// Appends one task's elements, writing their sign+mantissa bytes to `sm`.
    fn push(mut self, inp: &[u16], sm: &mut [MaybeUninit<u8>]) -> Part {
        // Eight sub-histograms: consecutive equal exponents (most of them, in
        // real weights) would otherwise wait on each other's store-to-load
        // round trip. A task is under 2^32 elements, so u32 counts suffice.
        let mut h = [[0u32; SYMBOLS]; 8];
        for (inp, sm) in inp.chunks(BLOCK).zip(sm.chunks_mut(BLOCK)) {
            self.crc = data_crc_append(self.crc, inp);
            for (o, &b) in sm.iter_mut().zip(inp) {
                o.write(bits::sign_mantissa(b));
            }
            let (octets, rest) = inp.as_chunks::<8>();
            for o in octets {
                for (sub, &b) in h.iter_mut().zip(o) {
                    sub[bits::exponent(b) as usize] += 1;
                }
            }
            for &b in rest {
                h[0][bits::exponent(b) as usize] += 1;
            }
        }
        for (s, t) in self.hist.iter_mut().enumerate() {
            *t += h.iter().map(|sub| sub[s] as u64).sum::<u64>();
        }
        self.len += inp.len();
        self
    }
}

/// Histogram, CRC and sign+mantissa bytes of `bits`, the same whatever the
/// thread count.
pub(crate) fn scan(bits: &[u16]) -> Scan {
    // Written once, not zeroed first: zeroing would cost a pass of its own
    // where the allocator reuses memory.
    let mut sign_mantissa = Vec::with_capacity(bits.len());
    let part = sign_mantissa.spare_capacity_mut()[..bits.len()]
        .par_chunks_mut(TASK)
        .zip(bits.par_chunks(TASK))
        .fold(|| Part::EMPTY, |p, (sm, inp)| p.push(inp, sm))
        .reduce(|| Part::EMPTY, Part::join);
    assert_eq!(part.len, bits.len());
    // SAFETY: the tasks cover `0..bits.len()` (checked above: `len` sums their
    // lengths), and each wrote every byte of its range.
    unsafe { sign_mantissa.set_len(bits.len()) };
    Scan { hist: part.hist, crc: part.crc, sign_mantissa }
}
