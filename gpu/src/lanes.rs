//! The GPU decoder of the lanes layout (`docs/FORMAT.md` §8): one thread per
//! lane stream.
//!
//! In the warp layout a lane's words are interleaved with the other lanes' in
//! refill order, so every step is a warp-wide vote, rank and shuffle, and
//! decodes one symbol: a chain of about 140 cycles per symbol. Here each lane
//! has its own stream and offset, so a thread decodes its lane alone, with
//! the multi-symbol table of `crate::table::build_multi` in shared memory: one
//! 8-byte shared load yields up to four exponents, and the chain per lookup
//! is the load plus a few integer operations. No warp operation sits in the
//! chain. A full row always needs two lookups, which go without a vote; after
//! those, one ballot per lookup ends the row's loop once every lane has its
//! eight exponents, so that the warp still stores each row as 512 contiguous
//! bytes and loads its sign+mantissa bytes as 256 (the row loop is the warp
//! kernel's, `crate::decode::segment_rows`).
//!
//! A lane takes exactly the codes its row needs from a lookup (the cumulative
//! lengths say how many bits they take), so it never reads past its last
//! code, and the codes a lookup sees after those, which may be the next
//! lane's bits or zeros, never matter.
//!
//! Memory: each lane reads its own stream one word at a time, a word ahead
//! of its use, from the L1 cache: the line after the one in use is
//! prefetched into L1 once a row (a lane uses a 128-byte line for about 50
//! rows). The sign+mantissa bytes are prefetched into the L2
//! cache [`AHEAD`] rows ahead, because a row takes far less time here than a
//! load from memory. Prefetches load into no register, so no instruction waits
//! on them. Loads into registers are kept short (the one word ahead is an L1
//! hit, used a lookup or two later): a register whose load is in flight makes
//! every lane of the warp wait whenever any lane reads it.

use crate::decode::{ErrorReport, GroupInput, TensorDesc, byte_perm, report_segment, segment_rows, shl_or_zero};
use crate::format::{LANE_RUN, LANES, ROW_ELEMS, TABLE_BITS, WORD_BITS};
use crate::mem;
use crate::table::{MULTI_MAX, multi_bits, multi_count, multi_tops};
use crate::thread::{GlobalOut, GlobalRuns, Thread};

/// Rows ahead whose sign+mantissa bytes are prefetched into L2: about 8 rows
/// of decoding cover a load from memory under load.
const AHEAD: u32 = 8;

/// Words in a 128-byte cache line.
const LINE_WORDS: u32 = 32;

/// One thread decodes lane `lane_id` of slice `slice` of segment `seg` of
/// tensor `d` (the whole segment without a lane index); all lanes of the warp
/// call it together. The tensor's multi-symbol table is in shared memory.
///
/// A slice after the first starts at the bit its lane index entry gives, and
/// must end exactly where the next slice's entry says; the segment's last
/// slice ends as a whole segment does (FORMAT.md §8's rule). The index is
/// the walk of the same codes, so on a sound stream both hold exactly when
/// they would without an index; a lane that goes astray ends past its end
/// whatever the index says, since positions only grow.
#[inline(always)]
pub(crate) fn decode_segment<const NINE: bool, T: Thread, O: GlobalRuns>(
    t: &T,
    g: &GroupInput<'_>,
    d: &TensorDesc,
    seg: u64,
    slice: u32,
    out: &O,
    error: &ErrorReport,
) {
    let lane = t.lane_id();
    let oi = d.offset_base as usize + seg as usize * LANES + lane as usize;
    let (start, end) = (g.offsets[oi], g.offsets[oi + 1]);
    const ROW: u32 = ROW_ELEMS as u32;
    let seg_len = d.segment_len(seg);
    let row0 = slice.saturating_mul(d.rows_per_slice());
    if row0 >= seg_len.div_ceil(ROW).max(1) {
        // Warp-uniform: the tensor's last segment is short of this slice.
        return;
    }
    let entry = |k: u32| {
        let unit = seg * u64::from(d.slices()) + u64::from(k);
        mem::get_or_zero(g.lane_index, (d.index_base + unit * LANES as u64) as usize + lane as usize)
    };
    let from = if slice == 0 { 0 } else { entry(slice) };
    // The slice's elements; the last slice ends the segment.
    let len = seg_len.saturating_sub(row0 * ROW);
    let last = len <= d.rows_per_slice() * ROW;
    // Loaded now, so that only this word stays live through the rows.
    let next = if last { end } else { entry(slice + 1) };
    // The tensor's words from its word 0, indexed in 32 bits (a tensor has
    // fewer than 2^32 words).
    let mut s = LaneBits::new(&g.words[d.word_base as usize..], start, from);
    let elem0 = seg * u64::from(d.segment_rows) * u64::from(ROW) + u64::from(row0 * ROW);
    let len = len.min(d.rows_per_slice() * ROW);
    segment_rows::<AHEAD, NINE, T, O>(t, g, d, elem0, len, out, |bytes, valid| {
        let (exps, tops) = s.decode_run::<NINE, T>(t, valid);
        if NINE { join9(exps, tops, bytes) } else { join(exps, bytes) }
    });
    let bad = if last { !s.ends_in(start, next) } else { s.at(start) != next };
    if t.ballot(bad) != 0 && lane == 0 {
        report_segment(d, seg, error);
    }
}

/// One thread writes lane `lane_id`'s index entries for segment `seg` of `d`
/// (see `crate::decode::index_group_lanes`); `_slice` is always 0 (the
/// index kernel hands out whole segments). Lanes walk on their own: no warp
/// operation, so the loop may diverge.
#[inline(always)]
pub(crate) fn index_segment<T: Thread, O: GlobalOut<u32>>(
    t: &T,
    g: &GroupInput<'_>,
    d: &TensorDesc,
    seg: u64,
    _slice: u32,
    out: &O,
    _error: &ErrorReport,
) {
    let lane = t.lane_id();
    let slices = d.slices();
    if slices <= 1 {
        return;
    }
    let start = g.offsets[d.offset_base as usize + seg as usize * LANES + lane as usize];
    let seg_slices = d.segment_len(seg).div_ceil(ROW_ELEMS as u32).div_ceil(d.slice_rows);
    let first = (d.index_base + seg * u64::from(slices) * LANES as u64) as usize + lane as usize;
    let want = d.slice_rows * LANE_RUN as u32;
    let mut s = LaneBits::new(&g.words[d.word_base as usize..], start, 0);
    out.store(first, 0);
    for j in 1..slices {
        if j < seg_slices {
            // The slice before this one, code by code as the decode takes
            // them (the symbols are not kept).
            let (mut exps, mut tops, mut have) = (0, 0, 0);
            while have < want {
                s.lookup::<false, T>(t, &mut exps, &mut tops, &mut have, want);
            }
        }
        out.store(first + j as usize * LANES, if j < seg_slices { s.at(start) } else { 0 });
    }
}

/// A lane's stream and bit buffer.
struct LaneBits<'a> {
    /// The tensor's words; reads past the end give zero.
    words: &'a [u32],
    /// Index in `words` of the word after `ahead`.
    next: u32,
    /// The next word of the stream, as stored (loaded one refill ahead).
    ahead: u32,
    /// The last two words taken, in stream bit order, `prev` first: the
    /// unread bits are the low `64 - consumed` bits of `prev:last` (at most
    /// 43), as in the warp kernel's `LaneStream`.
    prev: u32,
    last: u32,
    /// Bits of `prev:last` consumed.
    consumed: u32,
}

impl<'a> LaneBits<'a> {
    /// The lane whose stream starts at word `start` of `words`, read from bit
    /// `from` of its stream on: two words taken and one ahead, so that the
    /// first lookup sees at least 33 bits whatever `from % 32`.
    #[inline(always)]
    fn new(words: &'a [u32], start: u32, from: u32) -> Self {
        let w = start.wrapping_add(from / WORD_BITS);
        mem::prefetch::<false, u32>(words, w as usize);
        let [mut prev, mut last, mut ahead] = [0; 3];
        mem::load_if(&mut prev, true, words, w);
        mem::load_if(&mut last, true, words, w.wrapping_add(1));
        mem::load_if(&mut ahead, true, words, w.wrapping_add(2));
        LaneBits {
            words,
            next: w.wrapping_add(3),
            ahead,
            prev: prev.swap_bytes(),
            last: last.swap_bytes(),
            consumed: from % WORD_BITS,
        }
    }

    /// This lane's next `want` exponents (at most 8), packed in bytes, the
    /// first in the low byte; the bytes past `want` hold no exponent. Called
    /// by all lanes of the warp together. `NINE` (lanes9): the symbols' low
    /// 8 bits so, and their bit 8 in the second value, the first in bit 0
    /// (bits past `want` hold nothing); without it that is 0.
    #[inline(always)]
    fn decode_run<const NINE: bool, T: Thread>(&mut self, t: &T, want: u32) -> (u64, u32) {
        // The line after the one in use, once a row: a lane uses a line for
        // about 50 rows, so it is in L1 long before the lane gets there.
        mem::prefetch::<false, u32>(self.words, self.next.wrapping_add(LINE_WORDS) as usize);
        let mut exps = 0u64;
        let mut tops = 0u32;
        let mut have = 0u32;
        // A full run needs at least two lookups (four codes a lookup): those
        // go without the vote, which would sit in the loop's chain.
        if want == LANE_RUN as u32 {
            self.lookup::<NINE, T>(t, &mut exps, &mut tops, &mut have, want);
            self.lookup::<NINE, T>(t, &mut exps, &mut tops, &mut have, want);
        }
        loop {
            // Uniform: the warp leaves together, once every lane has its run.
            if t.ballot(have < want) == 0 {
                return (exps, tops);
            }
            self.lookup::<NINE, T>(t, &mut exps, &mut tops, &mut have, want);
        }
    }

    /// One multi-symbol lookup for a lane that has `have` of its `want`
    /// exponents (none is taken when it has them all). Branch-free: some lane
    /// of the warp refills in almost every lookup, so a branch around the
    /// refill would be taken anyway, and cost its convergence bookkeeping.
    #[inline(always)]
    fn lookup<const NINE: bool, T: Thread>(
        &mut self,
        t: &T,
        exps: &mut u64,
        tops: &mut u32,
        have: &mut u32,
        want: u32,
    ) {
        let rest = want - *have;
        // Fewer than 12 unread bits: take a word. At most 43 are then unread,
        // all in `prev:last`.
        let refill = rest > 0 && self.consumed > 64 - TABLE_BITS;
        if refill {
            self.prev = self.last;
            self.last = self.ahead.swap_bytes();
        }
        self.consumed = self.consumed.wrapping_sub(if refill { WORD_BITS } else { 0 });
        mem::load_if(&mut self.ahead, refill, self.words, self.next);
        self.next = self.next.wrapping_add(u32::from(refill));
        // For a table the host built, `consumed <= 52` here; a larger shift
        // (a corrupt table) gives index 0 and a flagged segment.
        let idx = (self.unread() >> (u64::BITS - TABLE_BITS)) as usize;
        // Nibble `j` of the entry's lengths is the bits of its first
        // `min(j, count)` codes, so the shift that picks the bits to consume
        // is known before the lookup: the chain from one lookup to the next
        // is a shift, a mask and an add.
        let pick = rest.min(MULTI_MAX);
        let [symbols, meta] = t.shared_load_pair(idx);
        self.consumed = self.consumed.wrapping_add(multi_bits(meta, pick));
        // Bytes past the entry's count are zero; those past the run's eighth
        // slot fall off (the shift clamps to 0 at 64).
        *exps |= shl_or_zero(u64::from(symbols), 8 * *have);
        if NINE {
            // `have` is below 8: the bits land below bit 11.
            *tops |= multi_tops(meta) << *have;
        }
        // Never past `want`.
        *have += multi_count(meta).min(rest);
    }

    /// The unread bits of `prev:last`, MSB-aligned, zeros after them (all
    /// zeros once `consumed` reaches 64).
    #[inline(always)]
    fn unread(&self) -> u64 {
        shl_or_zero(u64::from(self.prev) << WORD_BITS | u64::from(self.last), self.consumed)
    }

    /// The position of the next unread bit, from word `start` of the tensor.
    #[inline(always)]
    fn at(&self, start: u32) -> u32 {
        // Words taken into `last`, less the 64 bits of `prev:last`.
        let taken = self.next.wrapping_sub(start).wrapping_sub(1);
        taken.wrapping_mul(WORD_BITS).wrapping_add(self.consumed).wrapping_sub(64)
    }

    /// Whether the lane's codes, from word `start` of the tensor, ended in the
    /// last word before `end` and only zero bits follow them there
    /// (FORMAT.md §8's rule).
    #[inline(always)]
    fn ends_in(&self, start: u32, end: u32) -> bool {
        let at = self.at(start);
        let stream = end.wrapping_sub(start).wrapping_mul(WORD_BITS);
        if stream == 0 {
            return at == 0;
        }
        // `pad < 32` puts the padding in `prev:last`: a lane past the start of
        // its last word has taken at least all of its words.
        let pad = stream.wrapping_sub(at);
        pad < WORD_BITS && (pad == 0 || self.unread() >> (64 - pad) == 0)
    }
}

/// A run's eight exponent bytes (`exps`, first in the low byte) joined with
/// its sign+mantissa bytes: two bf16 values a word, the first in the low half.
///
/// Per pair of slots, one byte permute puts each sign+mantissa byte twice in
/// its half (mantissa from the low copy, sign from the high one, the rest
/// masked off), another the two exponents in bytes 0 and 2; shifted by 7 they
/// fill the exponent bits, which the mask cleared.
#[inline(always)]
fn join(exps: u64, sm: u64) -> [u32; LANE_RUN / 2] {
    let sm = [sm as u32, (sm >> 32) as u32];
    let exps = [exps as u32, (exps >> 32) as u32];
    core::array::from_fn(|j| {
        let (b_sel, e_sel) = if j % 2 == 0 { (0x1100, 0x4140) } else { (0x3322, 0x4342) };
        let b = byte_perm(sm[j / 2], 0, b_sel);
        let e = byte_perm(exps[j / 2], 0, e_sel);
        (b & 0x807f_807f) + (e << 7)
    })
}

/// [`join`] for lanes9: a run's symbols (low 8 bits in the bytes of `exps`,
/// bit 8 in bit `k` of `tops`) joined with its 7 raw bytes (`raw`'s bytes
/// 0..7; byte 7 is the next run's): two bf16 values a word.
///
/// Value 7 is gathered from the raw bytes' top bits by two multiplies (each
/// moves four bits, 8 apart, to bits 28..32 with no carries between the
/// partial products) and put in byte 7; then each pair is, per 16-bit half,
/// `symbol << 6 | raw & 0x3f | (raw & 0x40) << 9`, the halves spread from
/// bytes by byte permutes as in [`join`].
#[inline(always)]
fn join9(exps: u64, tops: u32, raw: u64) -> [u32; LANE_RUN / 2] {
    let (lo, hi) = (raw as u32, (raw >> 32) as u32);
    let gather = |w: u32| (w & 0x8080_8080).wrapping_mul(0x0020_4081) >> 28;
    let seventh = gather(lo) | gather(hi & 0x0080_8080) << 4;
    let raw = [lo, (hi & 0x00ff_ffff) | seventh << 24];
    let exps = [exps as u32, (exps >> 32) as u32];
    core::array::from_fn(|j| {
        let sel = if j % 2 == 0 { 0x4140 } else { 0x4342 };
        let r = byte_perm(raw[j / 2], 0, sel);
        let e = byte_perm(exps[j / 2], 0, sel);
        let top = (tops >> (2 * j) & 1) << 14 | (tops >> (2 * j + 1) & 1) << 30;
        (e << 6) | top | (r & 0x003f_003f) | (r & 0x0040_0040) << 9
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bits;

    /// [`join9`] against the format's split, on varied symbols and raw values.
    #[test]
    fn join9_matches_the_bit_split() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let patterns: [u16; 8] =
                core::array::from_fn(|k| (x >> (k * 8)) as u16 ^ ((x >> 40) as u16).wrapping_mul(k as u16));
            let syms = patterns.map(bits::symbol9);
            let packed = bits::pack_raw9(patterns.map(bits::raw7));
            let exps = syms.iter().rev().fold(0u64, |a, &s| a << 8 | (s & 0xff) as u64);
            let tops = syms.iter().rev().fold(0u32, |a, &s| a << 1 | (s >> 8) as u32);
            // Byte 7 is the next run's first byte: anything.
            let mut raw = [(x >> 3) as u8; 8];
            raw[..7].copy_from_slice(&packed);
            let got = join9(exps, tops, u64::from_le_bytes(raw));
            let want: [u32; 4] = core::array::from_fn(|j| patterns[2 * j] as u32 | (patterns[2 * j + 1] as u32) << 16);
            assert_eq!(got, want);
        }
    }
}
