//! The encoder's first pass: exponent histogram, sign+mantissa bytes and data
//! CRC in one sweep, so that the input is read from memory once for all three.

use crate::container::data_crc_append;
use df11_gpu::bits;
use df11_gpu::format::{LANE_RUN, RAW9_GROUP_BYTES, SYMBOLS, SYMBOLS9};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per parallel task: small enough to balance, large enough that
/// merging its sub-histograms is cheap.
const TASK: usize = 1 << 16;

/// Elements per pass of the steps: 8 KiB of input, so that it stays in the
/// L1 cache from one to the next, beside the 16 KiB of sub-histograms.
const BLOCK: usize = 1 << 12;

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
        self.crc = crate::crc::combine(self.crc, next.crc, 2 * next.len as u64);
        self.len += next.len;
        self
    }

    /// Appends one task's elements, writing their sign+mantissa bytes to `sm`.
    fn push(mut self, inp: &[u16], sm: &mut [MaybeUninit<u8>]) -> Part {
        // Eight sub-histograms: consecutive equal exponents (most of them, in
        // real weights) would otherwise wait on each other's store-to-load
        // round trip. Indexed by sign and exponent, so that no mask is needed;
        // the halves add up below. A task is under 2^32 elements, so u32
        // counts suffice.
        let mut h = [[0u32; 2 * SYMBOLS]; 8];
        for (inp, sm) in inp.chunks(BLOCK).zip(sm.chunks_mut(BLOCK)) {
            // The histogram's loop has the work to hide the memory reads;
            // the split, vectorised on its own, then reads the cache.
            self.crc = crc_histogram::<7, { 2 * SYMBOLS }, 8>(self.crc, inp, &mut h);
            for (o, &b) in sm.iter_mut().zip(inp) {
                o.write(bits::sign_mantissa(b));
            }
        }
        for (s, t) in self.hist.iter_mut().enumerate() {
            *t += h.iter().map(|sub| (sub[s] + sub[s + SYMBOLS]) as u64).sum::<u64>();
        }
        self.len += inp.len();
        self
    }
}

/// Adds `inp` to the sub-histograms `h`, indexed by `b >> SHIFT` and
/// element `k` of each octet counted in `h[k % S]`, and returns `crc`
/// continued with it.
fn crc_histogram<const SHIFT: u32, const W: usize, const S: usize>(
    crc: u32,
    inp: &[u16],
    h: &mut [[u32; W]; S],
) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE4.2, the only feature the function enables.
        return unsafe { crc_histogram_sse42::<SHIFT, W, S>(crc, inp, h) };
    }
    histogram::<SHIFT, W, S>(inp, h);
    data_crc_append(crc, inp)
}

fn histogram<const SHIFT: u32, const W: usize, const S: usize>(inp: &[u16], h: &mut [[u32; W]; S]) {
    let (octets, rest) = inp.as_chunks::<8>();
    for o in octets {
        for (k, &b) in o.iter().enumerate() {
            h[k % S][(b >> SHIFT) as usize] += 1;
        }
    }
    for &b in rest {
        h[0][(b >> SHIFT) as usize] += 1;
    }
}

/// [`crc_histogram`] with the CRC32C instruction in the histogram's loop: the
/// histogram is bound by its stores, the CRC by the instruction's throughput,
/// so interleaved they take little more time than the histogram alone.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc_histogram_sse42<const SHIFT: u32, const W: usize, const S: usize>(
    crc: u32,
    inp: &[u16],
    h: &mut [[u32; W]; S],
) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u64};
    let mut c = u64::from(!crc);
    let (octets, rest) = inp.as_chunks::<8>();
    for o in octets {
        // x86 is little-endian: the u64s hold the elements' bytes in order.
        let [lo, hi]: [u64; 2] = bytemuck::cast(*o);
        c = _mm_crc32_u64(_mm_crc32_u64(c, lo), hi);
        for (k, &b) in o.iter().enumerate() {
            h[k % S][(b >> SHIFT) as usize] += 1;
        }
    }
    let mut c = c as u32;
    for &b in rest {
        c = _mm_crc32_u16(c, b);
        h[0][(b >> SHIFT) as usize] += 1;
    }
    !c
}

/// Histogram, CRC and sign+mantissa bytes of `bits`, the same whatever the
/// thread count. The bytes go into `spare` if it has the capacity.
pub(crate) fn scan(bits: &[u16], spare: Vec<u8>) -> Scan {
    // Written once, not zeroed first: zeroing would cost a pass of its own.
    let mut sign_mantissa = spare;
    sign_mantissa.clear();
    if sign_mantissa.capacity() < bits.len() {
        sign_mantissa = crate::hint::huge_vec(bits.len());
    }
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

/// What the lanes9 layout's first pass yields: the histogram of the 9-bit
/// symbols and the raw bytes.
pub(crate) struct Scan9 {
    pub hist: Box<[u64; SYMBOLS9]>,
    pub crc: u32,
    pub raw: Vec<u8>,
}

/// [`scan`] for the lanes9 layout: histogram of [`bits::symbol9`], CRC and
/// the raw bytes (`docs/FORMAT.md` section 12), the same whatever the
/// thread count. The raw bytes go into `spare` if it has the capacity.
pub(crate) fn scan9(bits: &[u16], spare: Vec<u8>) -> Scan9 {
    let len = bits::raw9_len(bits.len() as u64) as usize;
    // Zeroed before written (no uninitialised bytes are ever exposed): a
    // fresh allocation's pages come zeroed from the system, untouched until
    // written, so that costs no pass of its own; a spare's are in memory.
    let mut raw = spare;
    raw.clear();
    if raw.capacity() < len {
        raw = vec![0; len];
        crate::hint::huge_pages(&mut raw);
    } else {
        raw.resize(len, 0);
    }
    // TASK is a whole number of groups, so each task's raw bytes are its own.
    const TASK_RAW: usize = TASK / LANE_RUN * RAW9_GROUP_BYTES;
    let part = raw
        .par_chunks_mut(TASK_RAW)
        .zip(bits.par_chunks(TASK))
        .map(|(out, inp)| {
            // Four sub-histograms by sign and symbol (no mask needed), as in
            // `scan`; block by block, so that the raw bytes are packed from
            // the L1 cache.
            let mut h = Box::new([[0u32; 2 * SYMBOLS9]; 4]);
            let mut crc = 0;
            for (inp, out) in inp.chunks(BLOCK).zip(out.chunks_mut(BLOCK / LANE_RUN * RAW9_GROUP_BYTES)) {
                crc = crc_histogram::<6, { 2 * SYMBOLS9 }, 4>(crc, inp, &mut h);
                raw_groups(inp, out);
            }
            let mut hist = Box::new([0u64; SYMBOLS9]);
            for (s, t) in hist.iter_mut().enumerate() {
                *t = h.iter().map(|sub| (sub[s] + sub[s + SYMBOLS9]) as u64).sum();
            }
            (hist, crc, inp.len())
        })
        .reduce(
            || (Box::new([0u64; SYMBOLS9]), 0, 0),
            |(mut ha, ca, la), (hb, cb, lb)| {
                ha.iter_mut().zip(hb.iter()).for_each(|(a, b)| *a += b);
                (ha, crate::crc::combine(ca, cb, 2 * lb as u64), la + lb)
            },
        );
    Scan9 { hist: part.0, crc: part.1, raw }
}

/// Writes the raw bytes of `inp` (a whole number of groups, or the tensor's
/// last elements) into `out`, which holds exactly [`bits::raw9_len`] of them.
fn raw_groups(inp: &[u16], out: &mut [u8]) {
    let (groups, tail) = inp.as_chunks::<LANE_RUN>();
    let (whole, rest) = out.split_at_mut(groups.len() * RAW9_GROUP_BYTES);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of the x86-64 baseline: every x86-64 CPU has it.
    unsafe {
        raw_groups_sse2(groups, whole)
    };
    #[cfg(not(target_arch = "x86_64"))]
    raw_groups_portable(groups, whole);
    for (o, &b) in rest.iter_mut().zip(tail) {
        *o = bits::raw7(b);
    }
}

/// Whole groups, one at a time.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn raw_groups_portable(groups: &[[u16; LANE_RUN]], out: &mut [u8]) {
    for (g, o) in groups.iter().zip(out.as_chunks_mut::<RAW9_GROUP_BYTES>().0) {
        *o = bits::pack_raw9(g.map(bits::raw7));
    }
}

/// Whole groups with SSE2, one a step: the 8 raw values in 16-bit lanes,
/// value 7's bit `i` moved to bit 7 of lane `i` by a multiply, packed to
/// bytes, stored as 8 bytes of which the next group's store overwrites the
/// last (the final group's goes through the portable loop).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn raw_groups_sse2(groups: &[[u16; LANE_RUN]], out: &mut [u8]) {
    use std::arch::x86_64::*;
    let Some((last, most)) = groups.split_last() else { return };
    let low6 = _mm_set1_epi16(0x3f);
    let sign = _mm_set1_epi16(0x40);
    let top = _mm_set1_epi16(0x80);
    let spread = _mm_setr_epi16(128, 64, 32, 16, 8, 4, 2, 1);
    assert!(out.len() >= RAW9_GROUP_BYTES * groups.len(), "room for every group");
    let base = out.as_mut_ptr();
    for (i, g) in most.iter().enumerate() {
        // SAFETY: `g` is 16 readable bytes; the 8 bytes from `7i` are in
        // `out`: `7i + 8 <= 7·most.len() + 1 <= 7·groups.len()` (checked).
        unsafe {
            let v = _mm_loadu_si128(g.as_ptr().cast());
            let r = _mm_or_si128(_mm_and_si128(v, low6), _mm_and_si128(_mm_srli_epi16::<9>(v), sign));
            let r7 = _mm_unpackhi_epi64(_mm_shufflehi_epi16::<0xff>(r), _mm_shufflehi_epi16::<0xff>(r));
            let t = _mm_and_si128(_mm_mullo_epi16(r7, spread), top);
            let bytes = _mm_packus_epi16(_mm_or_si128(r, t), _mm_setzero_si128());
            _mm_storel_epi64(base.add(RAW9_GROUP_BYTES * i).cast(), bytes);
        }
    }
    let at = most.len() * RAW9_GROUP_BYTES;
    raw_groups_portable(std::slice::from_ref(last), &mut out[at..]);
}
