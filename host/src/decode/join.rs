//! The join pass of the lanes decoder: a chunk's exponents, which
//! `super::lanes` left in per-lane buffers, merged with the sign+mantissa
//! bytes into bf16 bit patterns.
//!
//! The lane buffers store each exponent pre-rotated ([`stored`]) so that a
//! bf16's two bytes each take bit 7 from one input byte and the other seven
//! bits from the other: on x86-64 two lanes (16 elements) are joined per step
//! with four SSE2 operations and two byte interleaves. The CRC32C of the output
//! is continued from the joined registers (SSE4.2), so that large outputs can
//! be written with non-temporal stores and never read back. Other targets use
//! a portable loop, which also serves as the SIMD join's reference in tests.

use super::lanes::LANE_BUF;
use crate::container::data_crc_append;
use df11_gpu::format::{LANE_RUN, LANES, ROW_ELEMS};

/// An exponent as the lane buffers store it: rotated right by one bit, so
/// that bit 7 is the exponent's low bit and bits 0..7 its high seven, the
/// bits of a bf16's low and high byte. Joining with the sign+mantissa byte
/// then needs no shifts.
#[inline(always)]
pub(super) fn stored(exponent: u8) -> u8 {
    exponent.rotate_right(1)
}

/// The exponent of a lane buffer byte (inverse of [`stored`]).
#[inline(always)]
fn exponent(stored: u8) -> u8 {
    stored.rotate_left(1)
}

/// How the decoder writes a segment's output.
pub(super) struct Output<'a> {
    /// With non-temporal stores, which bypass the caches: for outputs far
    /// larger than the caches, where the ordinary stores' read-for-ownership
    /// of every output line would double the memory traffic of the writes.
    pub(super) stream_out: bool,
    /// The CRC32C of the output so far, continued with the segment's, from
    /// the joined values while they are still in registers: none when the
    /// CRC is not wanted.
    pub(super) crc: Option<u32>,
    /// Empty, or the segment's expected output: then full rows are compared
    /// with it from the registers instead of stored (their part of the
    /// output is left as it was), the rest is stored and compared, and
    /// `differs` says whether any element differs.
    pub(super) expect: &'a [u16],
    /// Whether an element compared with `expect` differs.
    pub(super) differs: bool,
}

impl Output<'_> {
    /// Compares `got` with `want` (equal lengths), noting a difference.
    pub(super) fn compare(&mut self, got: &[u16], want: &[u16]) {
        self.differs |= got != want;
    }
}

/// Joins a chunk's exponents (lane `j`'s for row `r` at `bufs[j][8r..8r + 8]`)
/// with its sign+mantissa bytes into bf16 bit patterns, as `how` says;
/// `CRC` must be whether `how.crc` is some. If `want` (the chunk's part of
/// `how.expect`) is not empty, full rows are compared with it instead of
/// stored, as [`Output::expect`] says.
#[inline(always)]
pub(super) fn join_rows<const CRC: bool>(
    bufs: &[[u8; LANE_BUF]; LANES],
    sm: &[u8],
    out: &mut [u16],
    want: &[u16],
    how: &mut Output,
) {
    let (out_rows, out_tail) = out.as_chunks_mut::<ROW_ELEMS>();
    let (sm_rows, sm_tail) = sm.as_chunks::<ROW_ELEMS>();
    let (want_rows, want_tail) = want.as_chunks::<ROW_ELEMS>();
    let mut crc = how.crc.filter(|_| CRC);
    #[cfg(target_arch = "x86_64")]
    {
        let stream_out = how.stream_out;
        match &mut crc {
            Some(crc) if std::is_x86_feature_detected!("sse4.2") => {
                // SAFETY: the CPU has SSE4.2, the only feature the function enables.
                *crc = unsafe {
                    join_rows_sse42_crc(bufs, sm_rows, out_rows, stream_out, *crc, want_rows, &mut how.differs)
                };
            }
            crc => {
                // Rows read back for their CRC are stored, and compared after.
                let fused = if crc.is_some() { &[][..] } else { want_rows };
                // SAFETY: SSE2 is part of the x86-64 baseline: every x86-64 CPU has it.
                unsafe { join_rows_sse2(bufs, sm_rows, out_rows, stream_out, fused, &mut how.differs) };
                if fused.is_empty() && !want.is_empty() {
                    how.compare(out_rows.as_flattened(), want_rows.as_flattened());
                }
                if let Some(crc) = crc {
                    *crc = data_crc_append(*crc, out_rows.as_flattened());
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        join_rows_portable(bufs, sm_rows, out_rows);
        if !want.is_empty() {
            how.compare(out_rows.as_flattened(), want_rows.as_flattened());
        }
        if let Some(crc) = &mut crc {
            *crc = data_crc_append(*crc, out_rows.as_flattened());
        }
    }
    let r = out_rows.len();
    for (i, (o, &s)) in out_tail.iter_mut().zip(sm_tail).enumerate() {
        *o = df11_gpu::bits::join(exponent(bufs[i / LANE_RUN][LANE_RUN * r + i % LANE_RUN]), s);
    }
    if !want.is_empty() {
        how.compare(out_tail, want_tail);
    }
    if let Some(crc) = crc {
        how.crc = Some(data_crc_append(crc, out_tail));
    }
}

/// Full rows, one element at a time: the join for other targets (and the
/// check of the SSE2 one).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn join_rows_portable(bufs: &[[u8; LANE_BUF]; LANES], sm: &[[u8; ROW_ELEMS]], out: &mut [[u16; ROW_ELEMS]]) {
    for (r, (o, s)) in out.iter_mut().zip(sm).enumerate() {
        for (j, (o, s)) in o.chunks_exact_mut(LANE_RUN).zip(s.chunks_exact(LANE_RUN)).enumerate() {
            for ((o, &s), &e) in o.iter_mut().zip(s).zip(&bufs[j][LANE_RUN * r..LANE_RUN * r + LANE_RUN]) {
                *o = df11_gpu::bits::join(exponent(e), s);
            }
        }
    }
}

/// Full rows, two lanes (16 elements) a step with SSE2; with non-temporal
/// stores if `stream_out` and `out` is 16-byte aligned.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn join_rows_sse2(
    bufs: &[[u8; LANE_BUF]; LANES],
    sm: &[[u8; ROW_ELEMS]],
    out: &mut [[u16; ROW_ELEMS]],
    stream_out: bool,
    want: &[[u16; ROW_ELEMS]],
    differs: &mut bool,
) {
    // SAFETY: without `CRC` the join needs only SSE2, which this function enables.
    unsafe { join_rows_x86::<false>(bufs, sm, out, stream_out, 0, want, differs) };
}

/// [`join_rows_sse2`] that also continues `crc`, the CRC32C of the output
/// before these rows, with theirs, and returns it. The CRC32C instruction
/// takes the values from the registers the join built them in, so the
/// output is never read back and may bypass the caches.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn join_rows_sse42_crc(
    bufs: &[[u8; LANE_BUF]; LANES],
    sm: &[[u8; ROW_ELEMS]],
    out: &mut [[u16; ROW_ELEMS]],
    stream_out: bool,
    crc: u32,
    want: &[[u16; ROW_ELEMS]],
    differs: &mut bool,
) -> u32 {
    // SAFETY: this function enables SSE4.2, which the join with `CRC` needs.
    unsafe { join_rows_x86::<true>(bufs, sm, out, stream_out, crc, want, differs) }
}

/// The join of [`join_rows_sse2`] and [`join_rows_sse42_crc`].
///
/// # Safety
/// With `CRC` the CPU must have SSE4.2 (it runs the CRC32C instruction);
/// the function is then inlined into one that enables it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn join_rows_x86<const CRC: bool>(
    bufs: &[[u8; LANE_BUF]; LANES],
    sm: &[[u8; ROW_ELEMS]],
    out: &mut [[u16; ROW_ELEMS]],
    stream_out: bool,
    crc: u32,
    want: &[[u16; ROW_ELEMS]],
    differs: &mut bool,
) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86-64 baseline.
    let high = unsafe { _mm_set1_epi8(0x80u8 as i8) };
    // One 16-byte half-row pair: lanes 2p and 2p+1 of row `r`, joined.
    let pair = |r: usize, p: usize| {
        let exps = |j: usize| i64::from_le_bytes(bufs[j][LANE_RUN * r..LANE_RUN * r + 8].try_into().unwrap());
        // The high byte of a bf16 is sign | exponent >> 1, the low byte
        // (exponent & 1) << 7 | mantissa: with the stored exponent byte
        // `e`, each takes bit 7 from one of `e` and `s` and the rest from
        // the other. `d` holds the bit 7s that differ.
        let s: __m128i = bytemuck::pod_read_unaligned(&sm[r][16 * p..16 * p + 16]);
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe {
            let e = _mm_set_epi64x(exps(2 * p + 1), exps(2 * p));
            let d = _mm_and_si128(_mm_xor_si128(s, e), high);
            let (hi, lo) = (_mm_xor_si128(e, d), _mm_xor_si128(s, d));
            (_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi))
        }
    };
    // SAFETY: passed on from the caller.
    unsafe { write_rows_x86::<CRC>(out, stream_out, crc, want, differs, pair) }
}

/// Writes full rows of output, each from its 16 pairs of lanes:
/// `pair(r, p)` is row `r`'s elements `16p..16p + 16` in two registers. With
/// non-temporal stores if `stream_out` and `out` is 16-byte aligned; with
/// `CRC`, continues `crc`, the CRC32C of the output before these rows, with
/// theirs from the registers, and returns it (else 0). Both layouts' joins
/// store through this.
///
/// If `want` is not empty (it then holds as many rows as `out`), the rows
/// are compared with it instead of stored, and `differs` is set if any
/// element differs: a verification then neither writes the output nor
/// reads it back.
///
/// # Safety
/// With `CRC` the CPU must have SSE4.2 (it runs the CRC32C instruction);
/// the function is then inlined into one that enables it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn write_rows_x86<const CRC: bool>(
    out: &mut [[u16; ROW_ELEMS]],
    stream_out: bool,
    crc: u32,
    want: &[[u16; ROW_ELEMS]],
    differs: &mut bool,
    pair: impl Fn(usize, usize) -> (std::arch::x86_64::__m128i, std::arch::x86_64::__m128i),
) -> u32 {
    if want.is_empty() {
        // SAFETY: passed on from the caller.
        unsafe { rows_x86::<CRC, false>(out, stream_out, crc, want, differs, pair) }
    } else {
        assert_eq!(want.len(), out.len(), "a compared row for each row");
        // SAFETY: passed on from the caller.
        unsafe { rows_x86::<CRC, true>(out, false, crc, want, differs, pair) }
    }
}

/// [`write_rows_x86`], storing (`!CMP`) or comparing (`CMP`).
///
/// # Safety
/// As for [`write_rows_x86`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn rows_x86<const CRC: bool, const CMP: bool>(
    out: &mut [[u16; ROW_ELEMS]],
    stream_out: bool,
    crc: u32,
    want: &[[u16; ROW_ELEMS]],
    differs: &mut bool,
    pair: impl Fn(usize, usize) -> (std::arch::x86_64::__m128i, std::arch::x86_64::__m128i),
) -> u32 {
    use std::arch::x86_64::*;
    // Non-temporal stores need 16-byte aligned rows (512-byte rows are
    // aligned if the first is). Miri cannot run them (inline assembly):
    // under it they are ordinary stores, which write the same bytes.
    let stream_out = stream_out && !cfg!(miri) && out.as_ptr().cast::<u8>().align_offset(16) == 0;
    // The OR of every compared register's XOR with what was expected.
    // SAFETY: SSE2 is part of the x86-64 baseline.
    let mut diff = unsafe { _mm_setzero_si128() };
    let mut store = |r: usize, out: &mut [u16; ROW_ELEMS], p: usize, (a, b): (__m128i, __m128i)| {
        if CMP {
            let w: [__m128i; 2] = bytemuck::pod_read_unaligned(bytemuck::cast_slice(&want[r][16 * p..16 * p + 16]));
            // SAFETY: SSE2 is part of the x86-64 baseline.
            diff = unsafe { _mm_or_si128(diff, _mm_or_si128(_mm_xor_si128(a, w[0]), _mm_xor_si128(b, w[1]))) };
            return;
        }
        let dst = &mut bytemuck::cast_mut::<_, [u8; 2 * ROW_ELEMS]>(out)[32 * p..32 * p + 32];
        if stream_out {
            // SAFETY: the 32 bytes are in `dst`, borrowed mutably, and
            // 16-byte aligned (checked above for the first row).
            unsafe {
                _mm_stream_si128(dst.as_mut_ptr().cast(), a);
                _mm_stream_si128(dst.as_mut_ptr().add(16).cast(), b);
            }
        } else {
            dst[..16].copy_from_slice(bytemuck::bytes_of(&a));
            dst[16..].copy_from_slice(bytemuck::bytes_of(&b));
        }
    };
    // x86 is little-endian: the u64s are the output's bytes in order.
    let checksum = |c: &mut u64, (a, b): (__m128i, __m128i)| {
        for v in [a, b] {
            // SAFETY: with `CRC` the CPU has SSE4.2 (the caller's contract),
            // and this runs only with `CRC`.
            unsafe {
                *c = _mm_crc32_u64(*c, _mm_cvtsi128_si64(v) as u64);
                *c = _mm_crc32_u64(*c, _mm_cvtsi128_si64(_mm_unpackhi_epi64(v, v)) as u64);
            }
        }
    };
    let mut result = 0;
    if !CRC {
        for (r, out) in out.iter_mut().enumerate() {
            for p in 0..LANES / 2 {
                store(r, out, p, pair(r, p));
            }
        }
    } else {
        // One CRC32C chain would run at the instruction's latency (3 cycles
        // per 8 bytes, about three times the rest of the join): the rows go
        // in three parts, each with its own chain, interleaved so the
        // chains overlap, and the parts' CRCs are joined at the end.
        let k = out.len() / 3;
        let (first, rest) = out.split_at_mut(k);
        let (second, third) = rest.split_at_mut(k);
        let mut c = [u64::from(!crc), u64::from(!0u32), u64::from(!0u32)];
        for i in 0..k {
            let rows = [(i, &mut first[i]), (k + i, &mut second[i]), (2 * k + i, &mut third[i])];
            let [(r0, o0), (r1, o1), (r2, o2)] = rows;
            for p in 0..LANES / 2 {
                let v = [pair(r0, p), pair(r1, p), pair(r2, p)];
                for (ci, &vi) in c.iter_mut().zip(&v) {
                    checksum(ci, vi);
                }
                store(r0, o0, p, v[0]);
                store(r1, o1, p, v[1]);
                store(r2, o2, p, v[2]);
            }
        }
        for (i, out) in third.iter_mut().enumerate().skip(k) {
            let r = 2 * k + i;
            for p in 0..LANES / 2 {
                let v = pair(r, p);
                checksum(&mut c[2], v);
                store(r, out, p, v);
            }
        }
        let row_bytes = 2 * ROW_ELEMS as u64;
        let crc = |c: u64| !(c as u32);
        let two = crate::crc::combine(crc(c[0]), crc(c[1]), row_bytes * k as u64);
        result = crate::crc::combine(two, crc(c[2]), row_bytes * third.len() as u64);
    }
    if CMP {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        *differs |= unsafe { _mm_movemask_epi8(_mm_cmpeq_epi8(diff, _mm_setzero_si128())) } != 0xffff;
    }
    if stream_out {
        // Non-temporal stores are weakly ordered: fence them before the
        // output is handed to another thread.
        // SAFETY: SSE is part of the x86-64 baseline.
        unsafe { _mm_sfence() };
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::lanes::LaneBufs;

    /// The SSE2 join, with both kinds of stores and with or without the CRC,
    /// agrees with the portable one on every exponent and sign+mantissa byte.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sse2_join_matches_portable() {
        let mut bufs = LaneBufs::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        };
        let most = 512;
        for b in bufs.0.iter_mut() {
            b[..LANE_RUN * most].iter_mut().for_each(|v| *v = next());
        }
        // Row counts around the CRC join's three parts, and a whole chunk.
        for rows in [0, 1, 2, 3, 4, 5, 8, 10, 11, most] {
            let sm: Vec<[u8; ROW_ELEMS]> = (0..rows).map(|_| std::array::from_fn(|_| next())).collect();
            let mut want = vec![[0u16; ROW_ELEMS]; rows];
            join_rows_portable(&bufs.0, &sm, &mut want);
            for stream_out in [false, true] {
                let mut got: Vec<[u16; ROW_ELEMS]> = vec![[0; ROW_ELEMS]; rows];
                // SAFETY: SSE2 is part of the x86-64 baseline.
                unsafe { join_rows_sse2(&bufs.0, &sm, &mut got, stream_out, &[], &mut false) };
                assert!(got == want, "rows {rows}, stream_out = {stream_out}");
                // Compared instead of stored: equal, then one element changed.
                let mut differs = false;
                // SAFETY: as above.
                unsafe { join_rows_sse2(&bufs.0, &sm, &mut got, stream_out, &want, &mut differs) };
                assert!(!differs, "rows {rows}");
                if rows > 0 {
                    let mut changed = want.clone();
                    changed[rows - 1][ROW_ELEMS - 1] ^= 0x8000;
                    // SAFETY: as above.
                    unsafe { join_rows_sse2(&bufs.0, &sm, &mut got, stream_out, &changed, &mut differs) };
                    assert!(differs, "rows {rows}");
                }
                // The join that checksums as it goes: the same output, and the
                // CRC of it continued from an arbitrary one.
                if std::is_x86_feature_detected!("sse4.2") {
                    let mut got: Vec<[u16; ROW_ELEMS]> = vec![[0; ROW_ELEMS]; rows];
                    // SAFETY: the CPU has SSE4.2.
                    let crc = unsafe {
                        join_rows_sse42_crc(&bufs.0, &sm, &mut got, stream_out, 0x1234_5678, &[], &mut false)
                    };
                    assert!(got == want, "with CRC, rows {rows}, stream_out = {stream_out}");
                    assert_eq!(crc, data_crc_append(0x1234_5678, want.as_flattened()), "rows {rows}");
                    // Compared, with the CRC taken as well: a change in each
                    // of the three interleaved parts is seen.
                    let mut differs = false;
                    // SAFETY: as above.
                    let crc = unsafe {
                        join_rows_sse42_crc(&bufs.0, &sm, &mut got, stream_out, 0x1234_5678, &want, &mut differs)
                    };
                    assert!(!differs, "with CRC, rows {rows}");
                    assert_eq!(crc, data_crc_append(0x1234_5678, want.as_flattened()), "compared, rows {rows}");
                    for r in [0, rows / 3, rows / 2, rows.saturating_sub(1)].into_iter().filter(|_| rows > 0) {
                        let mut changed = want.clone();
                        changed[r][17] ^= 1;
                        let mut differs = false;
                        // SAFETY: as above.
                        unsafe { join_rows_sse42_crc(&bufs.0, &sm, &mut got, stream_out, 0, &changed, &mut differs) };
                        assert!(differs, "with CRC, rows {rows}, changed row {r}");
                    }
                }
            }
        }
        // Every (exponent, byte) pair joins to the bf16 it came from.
        for bits in 0..=u16::MAX {
            let (e, s) = (df11_gpu::bits::exponent(bits), df11_gpu::bits::sign_mantissa(bits));
            assert_eq!(df11_gpu::bits::join(exponent(stored(e)), s), bits);
        }
    }
}
