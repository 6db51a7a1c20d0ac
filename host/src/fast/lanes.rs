//! The fast CPU decoder for the lanes layout (`docs/FORMAT.md` section 8).
//!
//! Each lane's stream is stored whole, so lanes are independent: four are
//! decoded in one loop for instruction-level parallelism, each lookup of the
//! 12-bit table yields up to four exponents (a multi-symbol table), and a
//! lane's bit buffer is refilled once per four lookups without a branch. The
//! exponents land in per-lane buffers; a second pass joins them with the
//! sign+mantissa bytes, 16 elements per step with SSE2 on x86-64.
//!
//! Safety against corrupt input: the round loop (`rounds4`, the one `unsafe`
//! loop) runs only as many rounds as its lane buffers and the stream can take
//! whatever the codes, a bound checked before each batch of rounds; outside
//! it, stream reads are clamped to the tensor's stream bytes (past the end
//! they read zeros) and lane buffers are indexed through masks. A lane that
//! does not end exactly in its last word, followed by zero bits, makes the
//! segment `CorruptStream`.

use crate::container::{data_crc_append, lane_slots};
use df11_gpu::format::{LANE_RUN, LANES, MAX_CODE_LEN, ROW_ELEMS, TABLE_SIZE};
use df11_gpu::table::{Entry, entry_len, entry_symbol};

/// Symbols a multi-symbol lookup yields at most: four exponent bytes are one
/// `u32` store.
const MAX_PER_LOOKUP: usize = 4;

/// Bits a lookup consumes at most.
const LOOKUP_BITS: u32 = MAX_CODE_LEN;

/// Rows decoded per chunk: each lane then decodes at most 4,096 exponents
/// into its buffer before the join pass reads them back, so the buffers
/// (128 KiB in all) stay in the L2 cache.
const CHUNK_ROWS: usize = 512;

/// Exponents of one lane in a chunk.
const CHUNK_SYMS: usize = CHUNK_ROWS * LANE_RUN;

/// Lane buffer index mask: a power of two above `CHUNK_SYMS + 3`, the most a
/// lane holds (it may overshoot a chunk by up to 3 exponents).
const LANE_MASK: usize = 2 * CHUNK_SYMS - 1;

/// Lane buffer size: every masked index plus a 4-byte store fits, and one
/// cache line more, so that consecutive lanes' buffers start 64 bytes apart
/// modulo 4 KiB. With a multiple of 4 KiB they would all map to the same L1
/// cache sets, and the join pass, which reads all 32 lanes' bytes of a row,
/// would evict its own lines (measured: 5% slower decoding).
const LANE_BUF: usize = LANE_MASK + 1 + 64;

/// The multi-symbol decode table: for each 12-bit window, the exponents of
/// the whole codes it starts with (at most four), their count and their bits.
pub(crate) struct MultiTable {
    /// Up to four exponents as the lane buffers store them ([`stored`]), the
    /// first in the low byte.
    symbols: [u32; TABLE_SIZE],
    /// Bits 0..4: bits the codes take (a shift count, read modulo 64);
    /// bits 6..8: their count minus one.
    meta: [u8; TABLE_SIZE],
    /// The single-symbol table, for a lane's last few exponents.
    single: [Entry; TABLE_SIZE],
}

impl MultiTable {
    /// Builds the table from the single-symbol table of a code with
    /// `max_len` ≥ 1 (every entry decodes a code of 1..=12 bits).
    pub(crate) fn new(single: &[Entry; TABLE_SIZE]) -> Box<Self> {
        let mut t = Box::new(MultiTable { symbols: [0; TABLE_SIZE], meta: [0; TABLE_SIZE], single: *single });
        for idx in 0..TABLE_SIZE {
            let (mut used, mut count, mut symbols) = (0u32, 0usize, 0u32);
            while count < MAX_PER_LOOKUP {
                // The next code's window: the rest of `idx`, zeros after it.
                // The code is whole in `idx` exactly when its length fits.
                let e = single[(idx << used) & (TABLE_SIZE - 1)];
                if used + entry_len(e) > LOOKUP_BITS {
                    break;
                }
                symbols |= (stored(entry_symbol(e)) as u32) << (8 * count);
                used += entry_len(e);
                count += 1;
            }
            // count ≥ 1: every code is at most 12 bits.
            t.symbols[idx] = symbols;
            t.meta[idx] = (used | ((count as u32 - 1) << 6)) as u8;
        }
        t
    }
}

/// An exponent as the lane buffers store it: rotated right by one bit, so
/// that bit 7 is the exponent's low bit and bits 0..7 its high seven, the
/// bits of a bf16's low and high byte. Joining with the sign+mantissa byte
/// then needs no shifts.
#[inline(always)]
fn stored(exponent: u8) -> u8 {
    exponent.rotate_right(1)
}

/// The exponent of a lane buffer byte (inverse of [`stored`]).
#[inline(always)]
fn exponent(stored: u8) -> u8 {
    stored.rotate_left(1)
}

/// Per-lane exponent buffers, reused across segments and calls.
pub(crate) struct LaneBufs(Box<[[u8; LANE_BUF]; LANES]>);

impl LaneBufs {
    pub(crate) fn new() -> Self {
        LaneBufs(vec![[0u8; LANE_BUF]; LANES].into_boxed_slice().try_into().expect("LANES buffers"))
    }
}

/// The tensor's stream bytes, readable 8 at a time anywhere: past the end
/// they read as zeros.
pub(crate) struct Stream<'a> {
    bytes: &'a [u8],
    /// `bytes.len() - 8`: the last position an 8-byte load may start at.
    last: usize,
}

impl<'a> Stream<'a> {
    /// `bytes` must hold at least 8 bytes.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        assert!(bytes.len() >= 8, "stream buffers are padded to 8 bytes");
        Stream { bytes, last: bytes.len() - 8 }
    }

    /// The 64 stream bits from bit `pos`, MSB-first, zeros past the end.
    #[inline(always)]
    fn bits_at(&self, pos: usize) -> u64 {
        let at = (pos >> 3).min(self.last);
        let x = u64::from_be_bytes(self.bytes[at..at + 8].try_into().unwrap());
        // Past the end `pos - 8·at` exceeds 7; beyond 63 no real bit is left.
        // Such a lane is corrupt and is rejected by its end check.
        let shift = pos - 8 * at;
        if shift < 64 { x << shift } else { 0 }
    }
}

/// Bits of [`Lane::at`] below the stream position: the exponent count.
const HAVE_BITS: u32 = 16;

/// A lane's decoder state, two registers.
#[derive(Clone, Copy)]
struct Lane {
    /// The next bits, MSB-aligned, and a single 1 (the sentinel) that
    /// starts at bit 0 at a refill and rises with every bit consumed, zeros
    /// below it: the bits consumed since the last refill are its
    /// `trailing_zeros`. A refill leaves at least 57 valid bits (a load
    /// shifted by under 8), and at most 48 are consumed before the next, so
    /// the sentinel never reaches them.
    buf: u64,
    /// `pos << 16 | have`: the stream position of `buf`'s top bit at the last
    /// refill, and the exponents in the lane's buffer (below 2^13), packed so
    /// that four lanes' state fits in the registers of the decoding loop.
    at: usize,
}

impl Lane {
    fn new(start_bit: usize) -> Self {
        // Only the sentinel: the first refill starts at `start_bit`.
        Lane { buf: 1, at: start_bit << HAVE_BITS }
    }

    /// Exponents in the lane's buffer.
    #[inline(always)]
    fn have(&self) -> usize {
        self.at & ((1 << HAVE_BITS) - 1)
    }

    /// The stream position of the next unread bit.
    #[inline(always)]
    fn bit(&self) -> usize {
        (self.at >> HAVE_BITS) + self.buf.trailing_zeros() as usize
    }

    /// Moves the position to the next unread bit and returns it.
    #[inline(always)]
    fn advance(&mut self) -> usize {
        // The sentinel is at bit 48 at most, so `| 1 << 63` changes nothing
        // but tells the compiler the count is below 64.
        let consumed = (self.buf | 1 << 63).trailing_zeros() as usize;
        self.at += consumed << HAVE_BITS;
        self.at >> HAVE_BITS
    }

    /// Reloads `buf` from the next unread bit, the sentinel at bit 0.
    #[inline(always)]
    fn refill(&mut self, s: &Stream) {
        let pos = self.advance();
        self.buf = s.bits_at(pos) | 1;
    }

    /// One multi-symbol lookup: up to four exponents into `out` at `have`.
    #[inline(always)]
    fn lookup(&mut self, t: &MultiTable, out: &mut [u8; LANE_BUF]) {
        let idx = (self.buf >> (64 - LOOKUP_BITS)) as usize;
        let m = t.meta[idx] as u32;
        let at = self.at & LANE_MASK;
        out[at..at + 4].copy_from_slice(&t.symbols[idx].to_le_bytes());
        self.buf = self.buf.wrapping_shl(m);
        self.at += (m >> 6) as usize + 1;
    }

    /// One single-symbol lookup, for a lane's last exponents.
    #[inline(always)]
    fn lookup_one(&mut self, t: &MultiTable, out: &mut [u8; LANE_BUF]) {
        let e = t.single[(self.buf >> (64 - LOOKUP_BITS)) as usize];
        out[self.at & LANE_MASK] = stored(entry_symbol(e));
        self.buf <<= entry_len(e);
        self.at += 1;
    }

    /// Decodes until the lane holds at least `target` exponents, and never
    /// more than `limit` (its exponents left in the segment): no code may be
    /// read past a lane's last one.
    #[inline(always)]
    fn finish(&mut self, t: &MultiTable, s: &Stream, out: &mut [u8; LANE_BUF], target: usize, limit: usize) {
        while self.have() < target {
            self.refill(s);
            if limit - self.have() >= MAX_PER_LOOKUP {
                self.lookup(t, out);
            } else {
                self.lookup_one(t, out);
            }
        }
    }
}

/// Decodes four lanes until each holds at least its `target` exponents, but
/// at most its `limit`.
///
/// Rounds of one refill and four lookups per lane run while even the
/// furthest-behind lane can take a whole round without passing its target (a
/// round yields at most 16 exponents a lane; 4 lookups take at most 48 of
/// the 57 or more bits a refill provides), and while every refill's 8 bytes are
/// inside the stream. Then each lane finishes on its own.
#[inline(always)]
fn decode4(
    t: &MultiTable,
    s: &Stream,
    lanes: &mut [Lane; 4],
    bufs: &mut [[u8; LANE_BUF]; 4],
    target: [usize; 4],
    limit: [usize; 4],
    mut ahead: &[u8],
) {
    const ROUND: usize = 4 * MAX_PER_LOOKUP;
    const ROUND_BITS: usize = 4 * LOOKUP_BITS as usize;
    loop {
        let by_target = (0..4).map(|i| target[i].saturating_sub(lanes[i].have())).min().unwrap_or(0) / ROUND;
        // Round k's refill reads 8 bytes from bit `bit + k·48` at most.
        let furthest = lanes.iter().map(Lane::bit).max().unwrap_or(0);
        let by_stream = (8 * s.bytes.len()).saturating_sub(furthest + 64) / ROUND_BITS;
        let rounds = by_target.min(by_stream);
        if rounds == 0 {
            break;
        }
        // SAFETY: `rounds` is bounded as `rounds4` requires: by the targets
        // (at most CHUNK_SYMS + 3 exponents in a buffer, LANE_BUF is larger)
        // and by the stream's length.
        unsafe { rounds4(t, s, lanes, bufs, rounds, ahead) };
        ahead = ahead.get(rounds * 64..).unwrap_or(&[]);
    }
    for (i, (lane, buf)) in lanes.iter_mut().zip(bufs.iter_mut()).enumerate() {
        lane.finish(t, s, buf, target[i], limit[i]);
    }
}

/// `rounds` rounds of one refill and four lookups for each of four lanes;
/// round `r` also prefetches the cache line `64·r` bytes after `ahead`'s start.
///
/// # Safety
/// Each lane's buffer must have room for `16 · rounds + 4` more bytes after
/// its `have` exponents, and each refill's 8 bytes must be inside the stream:
/// `bit + 48 · (rounds - 1) + 64 ≤ 8 · stream length` for each lane.
#[inline(always)]
unsafe fn rounds4(
    t: &MultiTable,
    s: &Stream,
    lanes: &mut [Lane; 4],
    bufs: &mut [[u8; LANE_BUF]; 4],
    rounds: usize,
    ahead: &[u8],
) {
    let stream = s.bytes.as_ptr();
    let mut buf = lanes.map(|l| l.buf);
    let mut pos = lanes.map(|l| l.at >> HAVE_BITS);
    let starts: [*mut u8; 4] = std::array::from_fn(|i| bufs[i].as_mut_ptr());
    // SAFETY: `have` is within the buffer (the caller's bound).
    let mut out: [*mut u8; 4] = std::array::from_fn(|i| unsafe { starts[i].add(lanes[i].have()) });
    let ahead = ahead.as_ptr();
    for r in 0..rounds {
        // Past `ahead`'s end this fetches the next group's bytes, or harmlessly
        // nothing: not bounding it keeps a register free for the lanes.
        crate::hint::prefetch_line(ahead.wrapping_add(64 * r));
        for i in 0..4 {
            pos[i] += buf[i].trailing_zeros() as usize;
            // SAFETY: in the stream, by the caller's bound on `rounds`.
            let x = u64::from_be(unsafe { stream.add(pos[i] >> 3).cast::<u64>().read_unaligned() });
            buf[i] = x << (pos[i] & 7) | 1;
        }
        for _ in 0..4 {
            for i in 0..4 {
                let idx = (buf[i] >> (64 - LOOKUP_BITS)) as usize;
                let m = t.meta[idx] as u32;
                // SAFETY: within the lane's buffer, by the caller's bound:
                // each lookup advances `out` by at most 4.
                unsafe {
                    out[i].cast::<u32>().write_unaligned(t.symbols[idx].to_le());
                    out[i] = out[i].add((m >> 6) as usize + 1);
                }
                buf[i] = buf[i].wrapping_shl(m);
            }
        }
    }
    for i in 0..4 {
        // SAFETY: both pointers are into the same buffer.
        let have = unsafe { out[i].offset_from(starts[i]) } as usize;
        lanes[i] = Lane { buf: buf[i], at: pos[i] << HAVE_BITS | have };
    }
}

/// How the decoder writes a segment's output.
pub(crate) struct Output {
    /// With non-temporal stores, which bypass the caches: for outputs far
    /// larger than the caches, where the ordinary stores' read-for-ownership
    /// of every output line would double the memory traffic of the writes.
    pub stream_out: bool,
    /// The CRC32C of the output so far, continued with the segment's, from
    /// the joined values while they are still in registers: none when the
    /// CRC is not wanted.
    pub crc: Option<u32>,
}

/// Decodes one segment of the lanes layout into `out` (its `seg_len`
/// elements). `starts` holds the segment's 32 lane start words and the next
/// segment's first one. Returns `false` if a lane's stream does not end
/// exactly in its last word, followed only by zero bits.
///
/// `how` says how the output is written (see [`Output`]).
pub(crate) fn decode_segment(
    t: &MultiTable,
    s: &Stream,
    starts: &[u32],
    sm: &[u8],
    out: &mut [u16],
    bufs: &mut LaneBufs,
    how: &mut Output,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("bmi1")
        && std::is_x86_feature_detected!("bmi2")
        && std::is_x86_feature_detected!("movbe")
    {
        // SAFETY: the CPU has BMI1, BMI2 and MOVBE, the features the function enables.
        return unsafe {
            if how.crc.is_some() {
                decode_segment_bmi2::<true>(t, s, starts, sm, out, bufs, how)
            } else {
                decode_segment_bmi2::<false>(t, s, starts, sm, out, bufs, how)
            }
        };
    }
    if how.crc.is_some() {
        decode_segment_impl::<true>(t, s, starts, sm, out, bufs, how)
    } else {
        decode_segment_impl::<false>(t, s, starts, sm, out, bufs, how)
    }
}

/// [`decode_segment`] with BMI2's shifts (any register holds the count, where
/// the baseline x86-64 shifts need it in `cl`), BMI1's `tzcnt` (defined for
/// zero, where `bsf` needs a default loaded first) and MOVBE's byte-swapping
/// loads of the big-endian stream.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi1,bmi2,movbe")]
fn decode_segment_bmi2<const CRC: bool>(
    t: &MultiTable,
    s: &Stream,
    starts: &[u32],
    sm: &[u8],
    out: &mut [u16],
    bufs: &mut LaneBufs,
    how: &mut Output,
) -> bool {
    decode_segment_impl::<CRC>(t, s, starts, sm, out, bufs, how)
}

/// [`decode_segment`]'s body, compiled for each CPU feature set, and with
/// `CRC` (`how.crc` is some) or without: one loop each, so that the one
/// without keeps exactly the code it has alone.
#[inline(always)]
fn decode_segment_impl<const CRC: bool>(
    t: &MultiTable,
    s: &Stream,
    starts: &[u32],
    sm: &[u8],
    out: &mut [u16],
    bufs: &mut LaneBufs,
    how: &mut Output,
) -> bool {
    let seg_len = out.len();
    let slots: [usize; LANES] = std::array::from_fn(|j| lane_slots(seg_len, j));
    let mut lanes: [Lane; LANES] = std::array::from_fn(|j| Lane::new(32 * starts[j] as usize));
    let rows = seg_len.div_ceil(ROW_ELEMS);
    for chunk_start in (0..rows).step_by(CHUNK_ROWS) {
        let chunk_rows = (rows - chunk_start).min(CHUNK_ROWS);
        let first = chunk_start * LANE_RUN;
        let last_chunk = chunk_start + chunk_rows == rows;
        let elems = chunk_start * ROW_ELEMS..(seg_len).min((chunk_start + chunk_rows) * ROW_ELEMS);
        // Each group of lanes fetches an eighth of the chunk's sign+mantissa
        // bytes into the cache while it decodes, for the join that follows.
        let share = elems.len().div_ceil(LANES / 4);
        for (g, group) in bufs.0.as_chunks_mut::<4>().0.iter_mut().enumerate() {
            let l4: &mut [Lane; 4] = (&mut lanes[4 * g..4 * g + 4]).try_into().unwrap();
            let limit = std::array::from_fn(|i| slots[4 * g + i] - first);
            let target = limit.map(|l| l.min(CHUNK_SYMS));
            let ahead = sm.get(elems.start + g * share..elems.end.min(elems.start + (g + 1) * share)).unwrap_or(&[]);
            decode4(t, s, l4, group, target, limit, ahead);
        }
        join_rows::<CRC>(&bufs.0, &sm[elems.clone()], &mut out[elems], how);
        if !last_chunk {
            // Up to 3 exponents past the chunk move to the buffer's start.
            for (lane, buf) in lanes.iter_mut().zip(bufs.0.iter_mut()) {
                buf.copy_within(CHUNK_SYMS..CHUNK_SYMS + MAX_PER_LOOKUP, 0);
                lane.at -= CHUNK_SYMS;
            }
        }
    }
    // Each lane must end in its last word, and the rest of that word be zero.
    lanes.iter().enumerate().all(|(j, lane)| {
        let end = lane.bit();
        let (from, to) = (32 * starts[j] as usize, 32 * starts[j + 1] as usize);
        let pad = to.wrapping_sub(end);
        end >= from && end <= to && pad < 32 && (pad == 0 || s.bits_at(end) >> (64 - pad) == 0)
    })
}

/// Joins a chunk's exponents (lane `j`'s for row `r` at `bufs[j][8r..8r + 8]`)
/// with its sign+mantissa bytes into bf16 bit patterns, as `how` says;
/// `CRC` must be whether `how.crc` is some.
#[inline(always)]
fn join_rows<const CRC: bool>(bufs: &[[u8; LANE_BUF]; LANES], sm: &[u8], out: &mut [u16], how: &mut Output) {
    let (out_rows, out_tail) = out.as_chunks_mut::<ROW_ELEMS>();
    let (sm_rows, sm_tail) = sm.as_chunks::<ROW_ELEMS>();
    let mut crc = how.crc.filter(|_| CRC);
    #[cfg(target_arch = "x86_64")]
    {
        // Non-temporal stores need 16-byte aligned rows (512-byte rows are
        // aligned if the first is).
        let stream_out = how.stream_out && out_rows.as_ptr().cast::<u8>().align_offset(16) == 0;
        match &mut crc {
            Some(crc) if std::is_x86_feature_detected!("sse4.2") => {
                // SAFETY: the CPU has SSE4.2, the only feature the function enables.
                *crc = unsafe { join_rows_sse42_crc(bufs, sm_rows, out_rows, stream_out, *crc) };
            }
            crc => {
                // SAFETY: SSE2 is part of the x86-64 baseline: every x86-64 CPU has it.
                unsafe { join_rows_sse2(bufs, sm_rows, out_rows, stream_out) };
                if let Some(crc) = crc {
                    *crc = data_crc_append(*crc, out_rows.as_flattened());
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        join_rows_portable(bufs, sm_rows, out_rows);
        if let Some(crc) = &mut crc {
            *crc = data_crc_append(*crc, out_rows.as_flattened());
        }
    }
    let r = out_rows.len();
    for (i, (o, &s)) in out_tail.iter_mut().zip(sm_tail).enumerate() {
        *o = df11_gpu::bits::join(exponent(bufs[i / LANE_RUN][LANE_RUN * r + i % LANE_RUN]), s);
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

/// Full rows, two lanes (16 elements) a step with SSE2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn join_rows_sse2(
    bufs: &[[u8; LANE_BUF]; LANES],
    sm: &[[u8; ROW_ELEMS]],
    out: &mut [[u16; ROW_ELEMS]],
    stream_out: bool,
) {
    join_rows_x86::<false>(bufs, sm, out, stream_out, 0);
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
) -> u32 {
    join_rows_x86::<true>(bufs, sm, out, stream_out, crc)
}

/// The join of [`join_rows_sse2`] and [`join_rows_sse42_crc`]; with `CRC`
/// it must be inlined where SSE4.2 is enabled.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn join_rows_x86<const CRC: bool>(
    bufs: &[[u8; LANE_BUF]; LANES],
    sm: &[[u8; ROW_ELEMS]],
    out: &mut [[u16; ROW_ELEMS]],
    stream_out: bool,
    crc: u32,
) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY (each block below): SSE2 is part of the x86-64 baseline; the
    // CRC32C instruction runs only with `CRC`, inlined into a function that
    // enables SSE4.2, which its caller checked the CPU has.
    let high = unsafe { _mm_set1_epi8(0x80u8 as i8) };
    let mut c = u64::from(!crc);
    for (r, (out, sm)) in out.iter_mut().zip(sm).enumerate() {
        let exps = |j: usize| i64::from_le_bytes(bufs[j][LANE_RUN * r..LANE_RUN * r + 8].try_into().unwrap());
        let out: &mut [u8; 2 * ROW_ELEMS] = bytemuck::cast_mut(out);
        for p in 0..LANES / 2 {
            // The high byte of a bf16 is sign | exponent >> 1, the low byte
            // (exponent & 1) << 7 | mantissa: with the stored exponent byte
            // `e`, each takes bit 7 from one of `e` and `s` and the rest from
            // the other. `d` holds the bit 7s that differ.
            let s: __m128i = bytemuck::pod_read_unaligned(&sm[16 * p..16 * p + 16]);
            let (a, b) = unsafe {
                let e = _mm_set_epi64x(exps(2 * p + 1), exps(2 * p));
                let d = _mm_and_si128(_mm_xor_si128(s, e), high);
                let (hi, lo) = (_mm_xor_si128(e, d), _mm_xor_si128(s, d));
                (_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi))
            };
            if CRC {
                // x86 is little-endian: the u64s are the output's bytes in order.
                for v in [a, b] {
                    unsafe {
                        c = _mm_crc32_u64(c, _mm_cvtsi128_si64(v) as u64);
                        c = _mm_crc32_u64(c, _mm_cvtsi128_si64(_mm_unpackhi_epi64(v, v)) as u64);
                    }
                }
            }
            let dst = &mut out[32 * p..32 * p + 32];
            if stream_out {
                // SAFETY: the 32 bytes are in `dst`, borrowed mutably, and
                // 16-byte aligned (the caller checked the first row).
                unsafe {
                    _mm_stream_si128(dst.as_mut_ptr().cast(), a);
                    _mm_stream_si128(dst.as_mut_ptr().add(16).cast(), b);
                }
            } else {
                dst[..16].copy_from_slice(bytemuck::bytes_of(&a));
                dst[16..].copy_from_slice(bytemuck::bytes_of(&b));
            }
        }
    }
    if stream_out {
        // Non-temporal stores are weakly ordered: fence them before the
        // output is handed to another thread.
        unsafe { _mm_sfence() };
    }
    !(c as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SSE2 join, with both kinds of stores and with or without the CRC,
    /// agrees with the portable one on every exponent and sign+mantissa byte.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sse2_join_matches_portable() {
        let mut bufs = LaneBufs::new();
        let rows = 8;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        };
        for b in bufs.0.iter_mut() {
            b[..LANE_RUN * rows].iter_mut().for_each(|v| *v = next());
        }
        let sm: Vec<[u8; ROW_ELEMS]> = (0..rows).map(|_| std::array::from_fn(|_| next())).collect();
        let mut want = vec![[0u16; ROW_ELEMS]; rows];
        join_rows_portable(&bufs.0, &sm, &mut want);
        for stream_out in [false, true] {
            // A fresh Vec of 16-byte-aligned rows keeps the streaming stores legal.
            let mut got: Vec<[u16; ROW_ELEMS]> = vec![[0; ROW_ELEMS]; rows];
            let aligned = got.as_ptr().cast::<u8>().align_offset(16) == 0;
            // SAFETY: SSE2 is part of the x86-64 baseline.
            unsafe { join_rows_sse2(&bufs.0, &sm, &mut got, stream_out && aligned) };
            assert!(got == want, "stream_out = {stream_out}");
            // The join that checksums as it goes: the same output, and the
            // CRC of it continued from an arbitrary one.
            if std::is_x86_feature_detected!("sse4.2") {
                let mut got: Vec<[u16; ROW_ELEMS]> = vec![[0; ROW_ELEMS]; rows];
                let aligned = got.as_ptr().cast::<u8>().align_offset(16) == 0;
                // SAFETY: the CPU has SSE4.2.
                let crc = unsafe { join_rows_sse42_crc(&bufs.0, &sm, &mut got, stream_out && aligned, 0x1234_5678) };
                assert!(got == want, "with CRC, stream_out = {stream_out}");
                assert_eq!(crc, data_crc_append(0x1234_5678, want.as_flattened()));
            }
        }
        // Every (exponent, byte) pair joins to the bf16 it came from.
        for bits in 0..=u16::MAX {
            let (e, s) = (df11_gpu::bits::exponent(bits), df11_gpu::bits::sign_mantissa(bits));
            assert_eq!(df11_gpu::bits::join(exponent(stored(e)), s), bits);
        }
    }
}
