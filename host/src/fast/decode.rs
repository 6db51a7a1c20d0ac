//! The fast CPU decoder: the 32 lanes of a segment decoded interleaved in one
//! loop, so the independent lane streams give the core instruction-level
//! parallelism, with branchless refills and a single 12-bit table lookup per
//! symbol. Segments are independent, so the parallel version splits the output
//! over the current rayon pool.
//!
//! Contract: both entry points check the tensor's structure (offsets, sizes,
//! code lengths) before touching data, so any `CompressedTensor` is safe to
//! pass. Corrupt stream words cannot make them panic or read out of bounds:
//! word reads are clamped to the segment, and a segment that reads past its
//! words or leaves words unread is reported as `CorruptStream`. The data CRC is
//! checked unless [`DecodeOptions::verify_crc`] is off.

use super::lanes::{self, LaneBufs, MultiTable, Stream};
use crate::CompressedTensor;
use crate::container::{Layout, data_crc_append};
use crate::error::{Error, Result};
use df11_gpu::format::{LANE_RUN, LANES, ROW_ELEMS, TABLE_SIZE};
use df11_gpu::table::{self, Entry, entry_len, entry_symbol};
use rayon::prelude::*;
use std::borrow::Cow;
use std::cell::RefCell;

/// Options of the fast decoders.
#[derive(Clone, Copy, Debug)]
pub struct DecodeOptions {
    /// Check the CRC32C of the decoded output against `data_crc` (default on).
    pub verify_crc: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { verify_crc: true }
    }
}

/// Output size from which the lanes decoder writes with non-temporal stores
/// (larger than this machine class's last-level cache share of a core).
const STREAM_OUT_BYTES: u64 = 8 << 20;

/// Elements one parallel task decodes at least, so that tiny segments
/// (`segment_rows` = 1) do not drown in scheduling overhead.
const TASK_ELEMS: usize = 1 << 18;

/// What decoding needs besides the tensor: the decode table and the code shape.
struct Prepared<'a> {
    table: Box<[Entry; TABLE_SIZE]>,
    max_len: u32,
    only_symbol: u8,
    seg_elems: usize,
    /// Lanes layout: the multi-symbol table and the stream bytes.
    lanes: Option<(Box<MultiTable>, Cow<'a, [u8]>)>,
}

thread_local! {
    /// Each thread's lane buffers for the lanes layout, allocated once.
    static LANE_BUFS: RefCell<Option<LaneBufs>> = const { RefCell::new(None) };
}

/// Checks everything the decoder relies on and builds the table.
fn prepare(t: &CompressedTensor, out_len: usize) -> Result<Prepared<'_>> {
    // O(segments): offsets, sizes and the code's completeness. After this every
    // slice taken below is in bounds and every table entry is meaningful.
    t.validate()?;
    if t.num_elements != out_len as u64 {
        return Err(Error::OutputLength { expected: t.num_elements, actual: out_len as u64 });
    }
    let mut table = Box::new([0 as Entry; TABLE_SIZE]);
    table::build(&t.code_lengths, t.only_symbol, &mut table)
        .map_err(|e| Error::Invalid { field: "code_lengths", reason: format!("{e:?}") })?;
    let lanes = (t.layout == Layout::Lanes && t.max_len > 0).then(|| (MultiTable::new(&table), stream_bytes(&t.words)));
    Ok(Prepared {
        table,
        max_len: t.max_len as u32,
        only_symbol: t.only_symbol,
        seg_elems: t.segment_elems() as usize,
        lanes,
    })
}

/// The lanes layout's stream bytes in stream order (the words' little-endian
/// bytes), at least 8 of them: a view where possible, else a padded copy.
fn stream_bytes(words: &[u32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") && words.len() >= 2 {
        return Cow::Borrowed(bytemuck::cast_slice(words));
    }
    let mut v: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    v.resize(v.len().max(8), 0);
    Cow::Owned(v)
}

/// Decodes `t` into `out` on the calling thread, checking the data CRC.
pub fn decode_fast_into(t: &CompressedTensor, out: &mut [u16]) -> Result<()> {
    decode_fast_into_with(t, out, &DecodeOptions::default())
}

/// [`decode_fast_into`] with options.
pub fn decode_fast_into_with(t: &CompressedTensor, out: &mut [u16], opts: &DecodeOptions) -> Result<()> {
    let p = prepare(t, out.len())?;
    let crc = decode_range(&p, t, 0, out, opts.verify_crc)?;
    check_crc(t, crc, opts)
}

/// Decodes `t` into `out`, segments spread over the current rayon pool (run it
/// inside `ThreadPool::install` to choose the thread count).
pub fn decode_parallel_into(t: &CompressedTensor, out: &mut [u16]) -> Result<()> {
    decode_parallel_into_with(t, out, &DecodeOptions::default())
}

/// [`decode_parallel_into`] with options.
pub fn decode_parallel_into_with(t: &CompressedTensor, out: &mut [u16], opts: &DecodeOptions) -> Result<()> {
    let p = prepare(t, out.len())?;
    let segs_per_task = (TASK_ELEMS / p.seg_elems).max(1);
    let task_elems = p.seg_elems * segs_per_task;
    let crcs = out
        .par_chunks_mut(task_elems)
        .enumerate()
        .map(|(i, chunk)| decode_range(&p, t, i * segs_per_task, chunk, opts.verify_crc).map(|crc| (crc, chunk.len())))
        .collect::<Result<Vec<_>>>()?;
    if !opts.verify_crc {
        return Ok(());
    }
    // CRCs of consecutive chunks combine exactly into the CRC of the whole.
    let crc = crcs.iter().fold(0, |acc, &(crc, len)| crate::crc::combine(acc, crc, 2 * len as u64));
    check_crc(t, crc, opts)
}

/// Allocating form of [`decode_fast_into`].
pub fn decode_fast(t: &CompressedTensor) -> Result<Vec<u16>> {
    // Validate before allocating: N is then backed by N sign+mantissa bytes.
    t.validate()?;
    let mut out = vec![0u16; t.num_elements as usize];
    crate::hint::huge_pages(&mut out);
    decode_fast_into(t, &mut out)?;
    Ok(out)
}

/// Allocating form of [`decode_parallel_into`].
pub fn decode_parallel(t: &CompressedTensor) -> Result<Vec<u16>> {
    t.validate()?;
    let mut out = vec![0u16; t.num_elements as usize];
    crate::hint::huge_pages(&mut out);
    decode_parallel_into(t, &mut out)?;
    Ok(out)
}

fn check_crc(t: &CompressedTensor, actual: u32, opts: &DecodeOptions) -> Result<()> {
    if opts.verify_crc && actual != t.data_crc {
        return Err(Error::Checksum { what: "data", stored: t.data_crc, computed: actual });
    }
    Ok(())
}

/// Decodes consecutive segments starting at `first_seg` into `out` (their
/// whole output, the last one possibly short) and returns the CRC32C of it
/// if `want_crc` (else 0).
fn decode_range(p: &Prepared, t: &CompressedTensor, first_seg: usize, out: &mut [u16], want_crc: bool) -> Result<u32> {
    // The lanes decoder writes outputs beyond the caches around them (it
    // checksums what it joins before storing it, so nothing is read back).
    let large = t.num_elements.saturating_mul(2) >= STREAM_OUT_BYTES;
    let mut crc = 0;
    for (i, seg_out) in out.chunks_mut(p.seg_elems).enumerate() {
        let s = first_seg + i;
        let base = s * p.seg_elems;
        let sm = &t.sign_mantissa[base..base + seg_out.len()];
        let ok = if p.max_len == 0 {
            // The tensor has no words at all (validated).
            join_const(p.only_symbol, sm, seg_out);
            true
        } else if let Some((multi, bytes)) = &p.lanes {
            let starts = &t.stream_offsets[LANES * s..LANES * (s + 1) + 1];
            let mut how = lanes::Output { stream_out: large, crc: want_crc.then_some(crc) };
            let ok = LANE_BUFS.with_borrow_mut(|bufs| {
                let bufs = bufs.get_or_insert_with(LaneBufs::new);
                lanes::decode_segment(multi, &Stream::new(bytes), starts, sm, seg_out, bufs, &mut how)
            });
            crc = how.crc.unwrap_or(0);
            ok
        } else {
            let words = &t.words[t.stream_offsets[s] as usize..t.stream_offsets[s + 1] as usize];
            decode_segment(&p.table, p.max_len, words, sm, seg_out)
        };
        if !ok {
            return Err(Error::CorruptStream { segment: s as u64 });
        }
        // The lanes decoder continued the CRC as it joined; other segments
        // are checksummed here, while still in cache.
        if want_crc && p.lanes.is_none() {
            crc = data_crc_append(crc, seg_out);
        }
    }
    Ok(crc)
}

#[inline(always)]
fn join(e: u8, sm: u8) -> u16 {
    df11_gpu::bits::join(e, sm)
}

fn join_const(e: u8, sm: &[u8], out: &mut [u16]) {
    for (o, &s) in out.iter_mut().zip(sm) {
        *o = join(e, s);
    }
}

/// Decodes one segment. Returns `false` if the segment's word count does not
/// match what its codes consume (a corrupt stream).
fn decode_segment(table: &[Entry; TABLE_SIZE], max_len: u32, words: &[u32], sm: &[u8], out: &mut [u16]) -> bool {
    let mut lanes = Lanes { buf: [0; LANES], nbits: [0; LANES], cursor: 0 };
    // An empty segment stream is read as zeros (and then rejected by the count).
    let stream: &[u32] = if words.is_empty() { &[0] } else { words };
    let mut exps = [0u8; ROW_ELEMS];
    let mut out_rows = out.chunks_exact_mut(ROW_ELEMS);
    let mut sm_rows = sm.chunks_exact(ROW_ELEMS);
    for (o, s) in (&mut out_rows).zip(&mut sm_rows) {
        lanes.row(table, max_len, stream, &mut exps, ROW_ELEMS);
        for ((o, &s), &e) in o.iter_mut().zip(s).zip(&exps) {
            *o = join(e, s);
        }
    }
    let o = out_rows.into_remainder();
    if !o.is_empty() {
        lanes.row(table, max_len, stream, &mut exps, o.len());
        for ((o, &s), &e) in o.iter_mut().zip(sm_rows.remainder()).zip(&exps) {
            *o = join(e, s);
        }
    }
    lanes.cursor == words.len()
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

/// The 32 lane decoders of a segment.
struct Lanes {
    /// MSB-aligned bit buffers: the top `nbits` bits are the lane's next bits,
    /// the rest are zero.
    buf: [u64; LANES],
    /// Valid bits of each buffer, < `max_len` + 32 ≤ 44.
    nbits: [u32; LANES],
    /// Next word of the segment.
    cursor: usize,
}

impl Lanes {
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
                self.step_pair(table, max_len, stream, exps, k);
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
    /// Requires `cursor + MAX_ROW_WORDS < stream.len()` at the row start: a row
    /// takes at most `MAX_ROW_WORDS` words, and a cursor is read (its word then
    /// dropped) even when its lane does not refill.
    #[inline(always)]
    fn step_pair(
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
            // most MAX_ROW_WORDS past its first value, and the caller checked
            // that that many words plus one remain.
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
