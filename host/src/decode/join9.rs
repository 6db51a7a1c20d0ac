//! The join pass of the lanes9 decoder: a chunk's 9-bit symbols, which
//! `super::lanes` left in per-lane buffers already shifted into place
//! (`symbol << 6`), merged with the raw bytes (`docs/FORMAT.md` section 12)
//! into bf16 bit patterns.
//!
//! A group of 8 elements keeps its raw values in 7 bytes: values 0..6 in the
//! bytes' low 7 bits, value 7 spread over their top bits. On x86-64 with
//! SSSE3 two lanes (16 elements, 14 bytes) are joined per step: one load,
//! two byte shuffles spread values 0..6 to 16-bit lanes, one `pmovmskb`
//! collects both values 7. Other targets, and the tensor's partial last
//! row, use a portable loop, which is also the SIMD join's reference in
//! tests.

use super::join::Output;
use super::lanes::LANE_BUF;
use crate::container::data_crc_append;
use df11_gpu::format::{LANE_RUN, LANES, RAW9_GROUP_BYTES, ROW_ELEMS};

/// A raw value (bits 0..7: sign in bit 6, the mantissa's 6 low bits below)
/// moved to its place in a bf16: sign to bit 15.
#[inline(always)]
fn place(raw: u8) -> u16 {
    let v = raw as u16;
    (v & 0x3f) | (v & 0x40) << 9
}

/// Raw bytes of one full row.
const ROW_RAW: usize = ROW_ELEMS / LANE_RUN * RAW9_GROUP_BYTES;

/// Joins a chunk's symbols (lane `j`'s for row `r` at `bufs[j][8r..8r + 8]`,
/// each `symbol << 6`) with its raw bytes `raw` into bf16 bit patterns in
/// `out`, continuing `how.crc` if `CRC`. The chunk starts on a whole row.
pub(super) fn join9_rows<const CRC: bool>(
    bufs: &[[u16; LANE_BUF]; LANES],
    raw: &[u8],
    out: &mut [u16],
    how: &mut Output,
) {
    let (out_rows, out_tail) = out.as_chunks_mut::<ROW_ELEMS>();
    let rows = out_rows.len();
    let (raw_rows, raw_tail) = raw.split_at(rows * ROW_RAW);
    let raw_rows = raw_rows.as_chunks::<ROW_RAW>().0;
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("ssse3") {
        // SAFETY: the CPU has SSSE3, the feature the function enables.
        unsafe { join_rows_ssse3(bufs, raw_rows, out_rows) };
    } else {
        join_rows_portable(bufs, raw_rows, out_rows);
    }
    #[cfg(not(target_arch = "x86_64"))]
    join_rows_portable(bufs, raw_rows, out_rows);
    join_tail(bufs, rows, raw_tail, out_tail);
    if CRC && let Some(crc) = how.crc {
        how.crc = Some(data_crc_append(crc, out));
    }
}

/// Full rows, one element at a time.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn join_rows_portable(bufs: &[[u16; LANE_BUF]; LANES], raw: &[[u8; ROW_RAW]], out: &mut [[u16; ROW_ELEMS]]) {
    for (r, (o, raw)) in out.iter_mut().zip(raw).enumerate() {
        let groups = raw.as_chunks::<RAW9_GROUP_BYTES>().0;
        for (j, (o, g)) in o.as_chunks_mut::<LANE_RUN>().0.iter_mut().zip(groups).enumerate() {
            let syms = &bufs[j][LANE_RUN * r..LANE_RUN * r + LANE_RUN];
            for ((o, &s), v) in o.iter_mut().zip(syms).zip(df11_gpu::bits::unpack_raw9(*g)) {
                *o = s | place(v);
            }
        }
    }
}

/// The partial last row (`row` of the chunk): its groups, the last one
/// possibly partial (one byte an element, bit 7 clear).
fn join_tail(bufs: &[[u16; LANE_BUF]; LANES], row: usize, raw: &[u8], out: &mut [u16]) {
    for (j, o) in out.chunks_mut(LANE_RUN).enumerate() {
        let syms = &bufs[j][LANE_RUN * row..LANE_RUN * row + LANE_RUN];
        let bytes = &raw[RAW9_GROUP_BYTES * j..];
        let values = match bytes.first_chunk::<RAW9_GROUP_BYTES>() {
            Some(g) if o.len() == LANE_RUN => df11_gpu::bits::unpack_raw9(*g),
            _ => std::array::from_fn(|k| bytes.get(k).map_or(0, |&b| b & 0x7f)),
        };
        for ((o, &s), v) in o.iter_mut().zip(syms).zip(values) {
            *o = s | place(v);
        }
    }
}

/// Full rows, two lanes (16 elements, 14 raw bytes) a step with SSSE3.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
fn join_rows_ssse3(bufs: &[[u16; LANE_BUF]; LANES], raw: &[[u8; ROW_RAW]], out: &mut [[u16; ROW_ELEMS]]) {
    use std::arch::x86_64::*;
    // Bytes 0..7 (first group's values 0..6) and 7..14 (the second's) to the
    // low byte of 16-bit lanes 0..7, lane 7 zero (-1 selects a zero).
    let first = _mm_setr_epi8(0, -1, 1, -1, 2, -1, 3, -1, 4, -1, 5, -1, 6, -1, -1, -1);
    let second = _mm_setr_epi8(7, -1, 8, -1, 9, -1, 10, -1, 11, -1, 12, -1, 13, -1, -1, -1);
    let low6 = _mm_set1_epi16(0x3f);
    let sign = _mm_set1_epi16(0x8000u16 as i16);
    let place = |v: __m128i| _mm_or_si128(_mm_and_si128(v, low6), _mm_and_si128(_mm_slli_epi16::<9>(v), sign));
    for (r, (o, raw)) in out.iter_mut().zip(raw).enumerate() {
        let pairs = o.as_chunks_mut::<{ 2 * LANE_RUN }>().0;
        for (p, o) in pairs.iter_mut().enumerate() {
            let at = 2 * RAW9_GROUP_BYTES * p;
            // A 16-byte load reads 2 bytes past the pair's 14: in the row but
            // for its last pair, which takes the row's last 16 bytes instead.
            let (x, shift) = if at + 16 <= ROW_RAW {
                let b: &[u8; 16] = raw[at..at + 16].try_into().unwrap();
                // SAFETY: `b` is 16 readable bytes.
                (unsafe { _mm_loadu_si128(b.as_ptr().cast()) }, false)
            } else {
                let b: &[u8; 16] = raw[ROW_RAW - 16..].try_into().unwrap();
                // SAFETY: as above.
                (unsafe { _mm_loadu_si128(b.as_ptr().cast()) }, true)
            };
            // The last pair's bytes sit 2 higher in its load.
            let x = if shift { _mm_srli_si128::<2>(x) } else { x };
            let tops = _mm_movemask_epi8(x);
            let lo = _mm_insert_epi16::<7>(_mm_shuffle_epi8(x, first), tops & 0x7f);
            let hi = _mm_insert_epi16::<7>(_mm_shuffle_epi8(x, second), (tops >> 7) & 0x7f);
            let (j, row) = (2 * p, LANE_RUN * r);
            let s0: &[u16; LANE_RUN] = bufs[j][row..row + LANE_RUN].try_into().unwrap();
            let s1: &[u16; LANE_RUN] = bufs[j + 1][row..row + LANE_RUN].try_into().unwrap();
            // SAFETY: each pointer covers 16 readable (or writable) bytes.
            unsafe {
                let v0 = _mm_or_si128(place(lo), _mm_loadu_si128(s0.as_ptr().cast()));
                let v1 = _mm_or_si128(place(hi), _mm_loadu_si128(s1.as_ptr().cast()));
                _mm_storeu_si128(o.as_mut_ptr().cast(), v0);
                _mm_storeu_si128(o.as_mut_ptr().add(LANE_RUN).cast(), v1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SSSE3 join against the portable one, on every raw byte value in
    /// every position and random symbols.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn ssse3_join_matches_portable() {
        if !std::is_x86_feature_detected!("ssse3") {
            return;
        }
        let rows = 4;
        let mut bufs = vec![[0u16; LANE_BUF]; LANES].into_boxed_slice();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for b in bufs.iter_mut() {
            for s in b[..LANE_RUN * rows].iter_mut() {
                *s = ((next() % 512) as u16) << 6;
            }
        }
        let bufs: &[[u16; LANE_BUF]; LANES] = (&*bufs).try_into().unwrap();
        let raw: Vec<[u8; ROW_RAW]> = (0..rows)
            .map(|r| std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add((r as u8).wrapping_mul(101))))
            .collect();
        let (mut a, mut b) = (vec![[0u16; ROW_ELEMS]; rows], vec![[1u16; ROW_ELEMS]; rows]);
        // SAFETY: the CPU has SSSE3 (checked above).
        unsafe { join_rows_ssse3(bufs, &raw, &mut a) };
        join_rows_portable(bufs, &raw, &mut b);
        assert_eq!(a, b);
    }
}
