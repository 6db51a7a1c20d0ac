//! The join pass of the lanes9 decoder: a chunk's 9-bit symbols, which
//! `super::lanes` left in per-lane buffers already shifted into place
//! (`symbol << 6`), merged with the raw bytes (`docs/FORMAT.md` section 12)
//! into bf16 bit patterns.
//!
//! A group of 8 elements keeps its raw values in 7 bytes: values 0..6 in the
//! bytes' low 7 bits, value 7 spread over their top bits. On x86-64 with
//! SSSE3 two lanes (16 elements, 14 bytes) are joined per step: one load,
//! two byte shuffles spread values 0..6 to 16-bit lanes, one `pmovmskb`
//! collects both values 7, and a multiply by 513 puts each value's sign
//! bit in place. The joined registers are stored and checksummed as the
//! lanes join's are (`super::join::write_rows_x86`): around the caches for
//! large outputs, the CRC taken from the registers. Other targets, and the
//! tensor's partial last row, use a portable loop, which is also the SIMD
//! join's reference in tests.

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
/// `out`, as `how` says (`CRC`: whether `how.crc` is some), or compares
/// full rows with `want` instead where that is not empty, as `join_rows`
/// does. The chunk starts on a whole row.
pub(super) fn join9_rows<const CRC: bool>(
    bufs: &[[u16; LANE_BUF]; LANES],
    raw: &[u8],
    out: &mut [u16],
    want: &[u16],
    how: &mut Output,
) {
    let (out_rows, out_tail) = out.as_chunks_mut::<ROW_ELEMS>();
    let (want_rows, want_tail) = want.as_chunks::<ROW_ELEMS>();
    let rows = out_rows.len();
    let (raw_rows, raw_tail) = raw.split_at(rows * ROW_RAW);
    let raw_rows = raw_rows.as_chunks::<ROW_RAW>().0;
    let mut crc = how.crc.filter(|_| CRC);
    // The CRC of rows joined without it, read back while they are in cache.
    let portable = |out_rows: &mut [[u16; ROW_ELEMS]], crc: &mut Option<u32>, how: &mut Output| {
        join_rows_portable(bufs, raw_rows, out_rows);
        if !want.is_empty() {
            how.compare(out_rows.as_flattened(), want_rows.as_flattened());
        }
        if let Some(c) = crc {
            *c = data_crc_append(*c, out_rows.as_flattened());
        }
    };
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("ssse3") {
        match &mut crc {
            Some(c) if std::is_x86_feature_detected!("sse4.2") => {
                // SAFETY: the CPU has SSE4.2 (and so SSSE3), the features the function enables.
                *c = unsafe {
                    join_rows_sse42_crc(bufs, raw_rows, out_rows, how.stream_out, *c, want_rows, &mut how.differs)
                };
            }
            crc => {
                // Rows read back for their CRC must stay in the cache, and
                // are stored, and compared after.
                let stream_out = how.stream_out && crc.is_none();
                let fused = if crc.is_some() { &[][..] } else { want_rows };
                // SAFETY: the CPU has SSSE3, the feature the function enables.
                unsafe { join_rows_ssse3(bufs, raw_rows, out_rows, stream_out, fused, &mut how.differs) };
                if fused.is_empty() && !want.is_empty() {
                    how.compare(out_rows.as_flattened(), want_rows.as_flattened());
                }
                if let Some(c) = crc {
                    *c = data_crc_append(*c, out_rows.as_flattened());
                }
            }
        }
    } else {
        portable(out_rows, &mut crc, how);
    }
    #[cfg(not(target_arch = "x86_64"))]
    portable(out_rows, &mut crc, how);
    join_tail(bufs, rows, raw_tail, out_tail);
    if !want.is_empty() {
        how.compare(out_tail, want_tail);
    }
    if let Some(c) = crc {
        how.crc = Some(data_crc_append(c, out_tail));
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

/// Full rows, two lanes (16 elements, 14 raw bytes) a step with SSSE3;
/// with non-temporal stores if `stream_out` (see `write_rows_x86`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
fn join_rows_ssse3(
    bufs: &[[u16; LANE_BUF]; LANES],
    raw: &[[u8; ROW_RAW]],
    out: &mut [[u16; ROW_ELEMS]],
    stream_out: bool,
    want: &[[u16; ROW_ELEMS]],
    differs: &mut bool,
) {
    // SAFETY: without `CRC` the join needs only SSSE3, which this function enables.
    unsafe { join_rows_x86::<false>(bufs, raw, out, stream_out, 0, want, differs) };
}

/// [`join_rows_ssse3`] that also continues `crc` with the rows' CRC32C,
/// taken from the joined registers, and returns it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn join_rows_sse42_crc(
    bufs: &[[u16; LANE_BUF]; LANES],
    raw: &[[u8; ROW_RAW]],
    out: &mut [[u16; ROW_ELEMS]],
    stream_out: bool,
    crc: u32,
    want: &[[u16; ROW_ELEMS]],
    differs: &mut bool,
) -> u32 {
    // SAFETY: this function enables SSE4.2 (which includes SSSE3), as the join with `CRC` needs.
    unsafe { join_rows_x86::<true>(bufs, raw, out, stream_out, crc, want, differs) }
}

/// The join of [`join_rows_ssse3`] and [`join_rows_sse42_crc`].
///
/// # Safety
/// The CPU must have SSSE3, and with `CRC` SSE4.2; the function is inlined
/// into one that enables them.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn join_rows_x86<const CRC: bool>(
    bufs: &[[u16; LANE_BUF]; LANES],
    raw: &[[u8; ROW_RAW]],
    out: &mut [[u16; ROW_ELEMS]],
    stream_out: bool,
    crc: u32,
    want: &[[u16; ROW_ELEMS]],
    differs: &mut bool,
) -> u32 {
    use std::arch::x86_64::*;
    // Bytes 0..7 (first group's values 0..6) and 7..14 (the second's) to the
    // low byte of 16-bit lanes 0..7, lane 7 zero (-1 selects a zero). A raw
    // byte `v` (16-bit lane, high byte zero) times 513 is `v | v << 9` with
    // no carries: its 6 low bits stay, bit 6 lands on the sign's bit 15.
    // SAFETY: SSE2 is part of the x86-64 baseline.
    let (first, second, spread, keep) = unsafe {
        (
            _mm_setr_epi8(0, -1, 1, -1, 2, -1, 3, -1, 4, -1, 5, -1, 6, -1, -1, -1),
            _mm_setr_epi8(7, -1, 8, -1, 9, -1, 10, -1, 11, -1, 12, -1, 13, -1, -1, -1),
            _mm_set1_epi16(513),
            _mm_set1_epi16(0x803f_u16 as i16),
        )
    };
    // SAFETY: as above.
    let place = |v: __m128i| unsafe { _mm_and_si128(_mm_mullo_epi16(v, spread), keep) };
    let pair = |r: usize, p: usize| {
        let raw = &raw[r];
        let at = 2 * RAW9_GROUP_BYTES * p;
        // A 16-byte load reads 2 bytes past the pair's 14: in the row but
        // for its last pair, which takes the row's last 16 bytes instead,
        // its bytes then 2 higher in the register.
        let last = at + 16 > ROW_RAW;
        let b: &[u8; 16] = raw[if last { ROW_RAW - 16 } else { at }..][..16].try_into().unwrap();
        let (j, row) = (2 * p, LANE_RUN * r);
        let s0: &[u16; LANE_RUN] = bufs[j][row..row + LANE_RUN].try_into().unwrap();
        let s1: &[u16; LANE_RUN] = bufs[j + 1][row..row + LANE_RUN].try_into().unwrap();
        // SAFETY: each pointer covers 16 readable bytes, and the CPU has
        // SSSE3 (the caller's contract).
        unsafe {
            let x = _mm_loadu_si128(b.as_ptr().cast());
            let x = if last { _mm_srli_si128::<2>(x) } else { x };
            let tops = _mm_movemask_epi8(x);
            let lo = _mm_insert_epi16::<7>(_mm_shuffle_epi8(x, first), tops & 0x7f);
            let hi = _mm_insert_epi16::<7>(_mm_shuffle_epi8(x, second), (tops >> 7) & 0x7f);
            (
                _mm_or_si128(place(lo), _mm_loadu_si128(s0.as_ptr().cast())),
                _mm_or_si128(place(hi), _mm_loadu_si128(s1.as_ptr().cast())),
            )
        }
    };
    // SAFETY: passed on from the caller.
    unsafe { super::join::write_rows_x86::<CRC>(out, stream_out, crc, want, differs, pair) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SSSE3 join, with both kinds of stores and with or without the
    /// CRC, against the portable one, on every raw byte value in every
    /// position and random symbols.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn ssse3_join_matches_portable() {
        if !std::is_x86_feature_detected!("ssse3") {
            return;
        }
        // Raw byte `i` of row `r` is `37i + r`: every value in every position.
        let rows = 256;
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
        let raw: Vec<[u8; ROW_RAW]> =
            (0..rows).map(|r| std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(r as u8))).collect();
        let mut want = vec![[1u16; ROW_ELEMS]; rows];
        join_rows_portable(bufs, &raw, &mut want);
        for stream_out in [false, true] {
            let mut got = vec![[0u16; ROW_ELEMS]; rows];
            // SAFETY: the CPU has SSSE3 (checked above).
            unsafe { join_rows_ssse3(bufs, &raw, &mut got, stream_out, &[], &mut false) };
            assert!(got == want, "stream_out = {stream_out}");
            // Compared instead of stored: equal, then one element changed.
            let mut differs = false;
            // SAFETY: as above.
            unsafe { join_rows_ssse3(bufs, &raw, &mut got, stream_out, &want, &mut differs) };
            assert!(!differs);
            let mut changed = want.clone();
            changed[rows / 2][ROW_ELEMS - 1] ^= 0x40;
            // SAFETY: as above.
            unsafe { join_rows_ssse3(bufs, &raw, &mut got, stream_out, &changed, &mut differs) };
            assert!(differs);
            // The join that checksums as it goes: the same output, and the
            // CRC of it continued from an arbitrary one, for row counts
            // around its three interleaved parts.
            if std::is_x86_feature_detected!("sse4.2") {
                for n in [0, 1, 2, 3, 4, 5, 8, 10, 11, rows] {
                    let mut got = vec![[0u16; ROW_ELEMS]; n];
                    // SAFETY: the CPU has SSE4.2.
                    let crc = unsafe {
                        join_rows_sse42_crc(bufs, &raw[..n], &mut got, stream_out, 0x1234_5678, &[], &mut false)
                    };
                    assert!(got == want[..n], "with CRC, {n} rows, stream_out = {stream_out}");
                    assert_eq!(crc, data_crc_append(0x1234_5678, want[..n].as_flattened()), "{n} rows");
                    // Compared, with the CRC taken as well; then a change in
                    // each of the three interleaved parts.
                    let mut differs = false;
                    // SAFETY: as above.
                    let crc = unsafe {
                        join_rows_sse42_crc(
                            bufs,
                            &raw[..n],
                            &mut got,
                            stream_out,
                            0x1234_5678,
                            &want[..n],
                            &mut differs,
                        )
                    };
                    assert!(!differs, "{n} rows");
                    assert_eq!(crc, data_crc_append(0x1234_5678, want[..n].as_flattened()), "compared, {n} rows");
                    for r in [0, n / 3, n / 2, n.saturating_sub(1)].into_iter().filter(|_| n > 0) {
                        let mut changed = want[..n].to_vec();
                        changed[r][200] ^= 1;
                        let mut differs = false;
                        // SAFETY: as above.
                        unsafe {
                            join_rows_sse42_crc(bufs, &raw[..n], &mut got, stream_out, 0, &changed, &mut differs)
                        };
                        assert!(differs, "{n} rows, changed row {r}");
                    }
                }
            }
        }
    }
}
