//! The CPU decoder for the warp layout (`docs/FORMAT.md` section 7).
//!
//! The layout interleaves a segment's 32 lane streams word by word in the
//! order a GPU warp consumes them, so the lanes cannot be decoded apart: they
//! share one word cursor. [`SegmentDecoder`] steps all 32 lanes in one loop,
//! so their independent bit buffers give the core instruction-level
//! parallelism, with branchless refills and a single 12-bit table lookup per
//! symbol, in the order the format prescribes.
//!
//! Safety against corrupt input: word reads are clamped to the segment's
//! words, except in the paired steps of full rows, which run only while
//! enough words remain for any codes. A segment that reads past its words or
//! leaves words unread is rejected by its word count.

use df11_gpu::format::{LANE_RUN, LANES, ROW_ELEMS, TABLE_SIZE};
use df11_gpu::table::{Entry, entry_len, entry_symbol};

/// Decodes one segment. Returns `false` if the segment's word count does not
/// match what its codes consume (a corrupt stream).
pub(super) fn decode_segment(
    table: &[Entry; TABLE_SIZE],
    max_len: u32,
    words: &[u32],
    sm: &[u8],
    out: &mut [u16],
) -> bool {
    let mut dec = SegmentDecoder { buf: [0; LANES], nbits: [0; LANES], cursor: 0 };
    // An empty segment stream is read as zeros (and then rejected by the count).
    let stream: &[u32] = if words.is_empty() { &[0] } else { words };
    let mut exps = [0u8; ROW_ELEMS];
    let mut out_rows = out.chunks_exact_mut(ROW_ELEMS);
    let mut sm_rows = sm.chunks_exact(ROW_ELEMS);
    for (o, s) in (&mut out_rows).zip(&mut sm_rows) {
        dec.row(table, max_len, stream, &mut exps, ROW_ELEMS);
        for ((o, &s), &e) in o.iter_mut().zip(s).zip(&exps) {
            *o = df11_gpu::bits::join(e, s);
        }
    }
    let o = out_rows.into_remainder();
    if !o.is_empty() {
        dec.row(table, max_len, stream, &mut exps, o.len());
        for ((o, &s), &e) in o.iter_mut().zip(sm_rows.remainder()).zip(&exps) {
            *o = df11_gpu::bits::join(e, s);
        }
    }
    dec.cursor == words.len()
}

/// Most words one row can take: a lane refills only below `max_len` (≤ 12)
/// bits and then holds ≥ 32, so two of its refills are ≥ 2 steps apart: at most
/// 4 per lane in a row's 8 steps.
const MAX_ROW_WORDS: usize = LANES * 4;

/// One lane's step of FORMAT.md §7 on buffer `b` with `n` valid bits, `w`
/// being the word at the segment's cursor: refill if `n < max_len`, look up,
/// consume. Returns the new buffer and bit count, the symbol, and whether
/// the word was taken (the caller then advances its cursor). Branchless: the
/// refill is data-dependent and would mispredict often, so the word is
/// always read and masked.
#[inline(always)]
fn step(table: &[Entry; TABLE_SIZE], max_len: u32, b: u64, n: u32, w: u32) -> (u64, u32, u8, bool) {
    let need = n < max_len;
    // The word goes right below the top `n` bits (`n` < 44 keeps the shift in range).
    let b = b | (((u64::from(w) << 32) >> n) & (need as u64).wrapping_neg());
    let n = n + 32 * need as u32;
    let e = table[(b >> 52) as usize];
    let len = entry_len(e);
    (b << len, n - len, entry_symbol(e), need)
}

/// The state of a segment's 32 interleaved lane decoders: a bit buffer per
/// lane and the word cursor they share.
struct SegmentDecoder {
    /// MSB-aligned bit buffers: the top `nbits` bits are the lane's next bits,
    /// the rest are zero.
    buf: [u64; LANES],
    /// Valid bits of each buffer, < `max_len` + 32 ≤ 44.
    nbits: [u32; LANES],
    /// Next word of the segment.
    cursor: usize,
}

impl SegmentDecoder {
    /// Decodes one row of `valid` elements (256 unless it is the tensor's
    /// partial last row) into `exps`, element `8j + k` of the row at index `8j + k`.
    #[inline(always)]
    fn row(
        &mut self,
        table: &[Entry; TABLE_SIZE],
        max_len: u32,
        stream: &[u32],
        exps: &mut [u8; ROW_ELEMS],
        valid: usize,
    ) {
        // `<` rather than `<=`: the paired steps read one word past the last
        // one they take (a word they then drop).
        if valid == ROW_ELEMS && self.cursor + MAX_ROW_WORDS < stream.len() {
            for k in (0..LANE_RUN).step_by(2) {
                // SAFETY: a full row, started with more than `MAX_ROW_WORDS`
                // words left (checked above), stepped in pairs from k = 0.
                unsafe { self.step_pair(table, max_len, stream, exps, k) };
            }
        } else {
            self.row_checked(table, max_len, stream, exps, valid)
        }
    }

    /// Steps `k` and `k + 1` of a full row, lane by lane.
    ///
    /// FORMAT.md §7 takes all lanes' step-`k` refills before any step-`k + 1`
    /// one. The step-`k` refills are known before the pair starts (they depend
    /// only on `nbits`), so their count fixes where the step-`k + 1` words
    /// begin, and each lane can do both of its steps in one visit, with one
    /// word cursor per step: half the lane state traffic of one step at a
    /// time. Each cursor advances by a refill flag that depends on the lane's
    /// own state only, so the cursors are one-cycle add chains, not chains
    /// through the table lookups.
    ///
    /// # Safety
    /// The pair must be steps `k`, `k + 1` of a full row whose earlier steps
    /// were taken by `step_pair`, with `cursor + MAX_ROW_WORDS < stream.len()`
    /// at the row start: a row takes at most `MAX_ROW_WORDS` words, and a
    /// cursor is read (its word then dropped) even when its lane does not
    /// refill. Words are read unchecked.
    #[inline(always)]
    unsafe fn step_pair(
        &mut self,
        table: &[Entry; TABLE_SIZE],
        max_len: u32,
        stream: &[u32],
        exps: &mut [u8; ROW_ELEMS],
        k: usize,
    ) {
        let first_refills = self.nbits.iter().filter(|&&n| n < max_len).count();
        let mut p0 = self.cursor;
        let mut p1 = self.cursor + first_refills;
        let word = |p: usize| {
            debug_assert!(p < stream.len());
            // SAFETY: a cursor is ≤ the words taken so far in this row, at
            // most MAX_ROW_WORDS past its first value, and that many words
            // plus one remain (the function's contract).
            unsafe { *stream.get_unchecked(p) }
        };
        for j in 0..LANES {
            let (b, n, e0, took) = step(table, max_len, self.buf[j], self.nbits[j], word(p0));
            p0 += took as usize;
            let (b, n, e1, took) = step(table, max_len, b, n, word(p1));
            p1 += took as usize;
            self.buf[j] = b;
            self.nbits[j] = n;
            exps[j * LANE_RUN + k] = e0;
            exps[j * LANE_RUN + k + 1] = e1;
        }
        self.cursor = p1;
    }

    /// One step at a time with every read clamped to the segment: the last
    /// rows of a segment, where the unchecked paired path could read past the
    /// words, and a tensor's partial last row.
    fn row_checked(
        &mut self,
        table: &[Entry; TABLE_SIZE],
        max_len: u32,
        stream: &[u32],
        exps: &mut [u8; ROW_ELEMS],
        valid: usize,
    ) {
        let last = stream.len() - 1;
        for k in 0..LANE_RUN {
            for j in 0..LANES {
                if j * LANE_RUN + k >= valid {
                    continue;
                }
                let w = stream[self.cursor.min(last)];
                let (b, n, e, took) = step(table, max_len, self.buf[j], self.nbits[j], w);
                self.cursor += took as usize;
                (self.buf[j], self.nbits[j]) = (b, n);
                exps[j * LANE_RUN + k] = e;
            }
        }
    }
}
