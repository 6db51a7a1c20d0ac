//! The group decode kernel: every segment of every tensor of a group, decoded
//! into one output buffer in one launch (`docs/FORMAT.md` §6–7).
//!
//! Work is split into *items*: an item is up to `warps_per_block` consecutive
//! segments of one tensor, one segment per warp. Blocks stride over the items
//! of all tensors in order, so every warp of a block always works on the same
//! tensor and the block needs one decode table in shared memory (8 KiB),
//! reloaded only when the block moves to the next tensor.
//!
//! Within a segment each lane keeps one word of a 32-word *window* of the
//! segment's interleaved stream (fetched with one coalesced load) and the next
//! window prefetched. Refills are served from the window with a ballot, a
//! population count of the lower lanes (FORMAT.md §7's word order) and a
//! shuffle, so decoding never waits on a dependent global load.
//!
//! Tables are built on the host (`crate::table::build`) and uploaded: the
//! table is then the exact code the CPU tests exercise, a kernel launch costs
//! one 8 KiB copy from L2 per block and tensor, and the kernel stays small.

use crate::format::{
    DESC_WORDS, ERR_LAUNCH, ERR_WORD_COUNT, LANE_RUN, LANES, LAYOUT_LANES, LAYOUT_LANES9, LAYOUT_WARP,
    MULTI_TABLE_WORDS, RAW9_GROUP_BYTES, ROW_ELEMS, TABLE_BITS, TABLE_WORDS, WORD_BITS,
};

/// Raw bytes of a lanes9 run, in the kernel's `u32` arithmetic.
const RAW9: u32 = RAW9_GROUP_BYTES as u32;
use crate::mem;
use crate::table::entry_len;
use crate::thread::{GlobalOut, GlobalRuns, Runs, Thread};
use core::sync::atomic::{AtomicU32, Ordering};

/// Entry-point name of [`decode_group`] in the PTX module.
pub const KERNEL_NAME: &str = "df11_decode_group";

/// Entry-point name of [`decode_group_lanes`] in the PTX module.
pub const LANES_KERNEL_NAME: &str = "df11_decode_group_lanes";

/// Entry-point name of [`decode_group_lanes9`] in the PTX module.
pub const LANES9_KERNEL_NAME: &str = "df11_decode_group_lanes9";

/// Where one tensor of a group lives in the device buffers of [`GroupInput`].
///
/// The host builds it from a validated tensor; all indices are in elements of
/// the buffer they index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TensorDesc {
    /// Elements of the tensor (N).
    pub num_elements: u64,
    /// Index of the tensor's first element in the output.
    pub out_offset: u64,
    /// Index in `words` of the tensor's word 0 (its segment offsets count from here).
    pub word_base: u64,
    /// Index in `sign_mantissa` (`u64` units) of the tensor's first 8 bytes;
    /// each tensor's bytes start on an 8-byte boundary.
    pub sm_base: u64,
    /// Index in `offsets` of the tensor's `stream_offsets[0]`.
    pub offset_base: u64,
    /// Index in `tables` of the tensor's decode table ([`TABLE_WORDS`] words).
    pub table_base: u64,
    /// Rows per segment (R).
    pub segment_rows: u32,
    /// Segments (S).
    pub num_segments: u32,
    /// Longest code length; refills happen below it.
    pub max_len: u32,
    /// The record's layout (`LAYOUT_WARP` or `LAYOUT_LANES` of `crate::format`):
    /// each kernel decodes the tensors of its own layout and skips the others.
    pub layout: u8,
    /// Group-wide index of the tensor's segment 0 (segments of all tensors
    /// numbered in order), for error reports; saturates at `u32::MAX`.
    pub first_segment: u32,
    /// Lanes layouts: rows of a *slice*, the part of a segment one warp
    /// decodes, when the group carries a lane index ([`GroupInput::lane_index`]);
    /// 0: no index, a warp decodes a whole segment.
    pub slice_rows: u32,
    /// Index in `lane_index` of the tensor's first entry (below 2^40).
    pub index_base: u64,
}

impl TensorDesc {
    /// The descriptor as the kernel reads it from device memory.
    pub const fn to_words(&self) -> [u64; DESC_WORDS] {
        [
            self.num_elements,
            self.out_offset,
            self.word_base,
            self.sm_base,
            self.offset_base,
            self.table_base,
            self.segment_rows as u64 | (self.num_segments as u64) << 32,
            self.max_len as u64 | (self.layout as u64) << 8 | (self.first_segment as u64) << 32,
            self.index_base & INDEX_BASE_MASK | (self.slice_rows as u64) << 40,
        ]
    }

    /// Inverse of [`TensorDesc::to_words`] for descriptor `i` of `descs`.
    #[inline(always)]
    pub fn read(descs: &[u64], i: usize) -> Self {
        let w = &descs[i * DESC_WORDS..(i + 1) * DESC_WORDS];
        TensorDesc {
            num_elements: w[0],
            out_offset: w[1],
            word_base: w[2],
            sm_base: w[3],
            offset_base: w[4],
            table_base: w[5],
            segment_rows: w[6] as u32,
            num_segments: (w[6] >> 32) as u32,
            max_len: w[7] as u32 & 0xff,
            layout: (w[7] >> 8) as u8,
            first_segment: (w[7] >> 32) as u32,
            slice_rows: (w[8] >> 40) as u32,
            index_base: w[8] & INDEX_BASE_MASK,
        }
    }

    /// The kernel's units of work, one warp's each: every slice of every
    /// segment.
    #[inline(always)]
    pub fn units(&self) -> u64 {
        u64::from(self.num_segments) * u64::from(self.slices())
    }

    /// Slices per segment: `ceil(R / slice_rows)`, 1 without an index.
    #[inline(always)]
    pub const fn slices(&self) -> u32 {
        if self.slice_rows == 0 { 1 } else { self.segment_rows.div_ceil(self.slice_rows) }
    }

    /// Rows one warp decodes: a slice's, or a whole segment's.
    #[inline(always)]
    pub const fn rows_per_slice(&self) -> u32 {
        if self.slice_rows == 0 { self.segment_rows } else { self.slice_rows }
    }

    /// Elements of segment `seg` (the last one may be short); indices inside a
    /// segment fit in `u32` (at most 2^24 elements).
    #[inline(always)]
    pub fn segment_len(&self, seg: u64) -> u32 {
        let full = u64::from(self.segment_rows) * ROW_ELEMS as u64;
        self.num_elements.saturating_sub(seg * full).min(full) as u32
    }
}

/// Bits of `TensorDesc::index_base` in its descriptor word.
const INDEX_BASE_MASK: u64 = (1 << 40) - 1;

/// What the kernel reports about corrupt input (one device allocation).
#[repr(C)]
#[derive(Debug)]
pub struct ErrorReport {
    /// `ERR_*` bits from `crate::format`, or-ed by every block that finds one.
    pub flags: AtomicU32,
    /// Smallest group-wide index of a segment whose stream does not match its
    /// offsets; the host resets it to `u32::MAX` before a checked launch.
    pub first_bad_segment: AtomicU32,
}

/// A group's device-resident inputs (see [`TensorDesc`] for how they index).
#[derive(Clone, Copy, Debug)]
pub struct GroupInput<'a> {
    /// [`DESC_WORDS`] words per tensor, in output order.
    pub descs: &'a [u64],
    /// Every tensor's code words, back to back.
    pub words: &'a [u32],
    /// Every tensor's `stream_offsets` (S + 1 each), back to back.
    pub offsets: &'a [u32],
    /// Every tensor's sign+mantissa bytes, little-endian in `u64`s, each tensor
    /// zero-padded to a multiple of 8 bytes.
    pub sign_mantissa: &'a [u64],
    /// One decode table per tensor, [`TABLE_WORDS`] words each.
    pub tables: &'a [u32],
    /// The lane index of the lanes tensors with `slice_rows > 0`: for each
    /// segment, slice and lane (in that order, lane fastest), the stream bit
    /// where the lane's slice starts, counted from the lane's first word.
    /// The host computes it when the group is loaded, by walking the codes
    /// (`df11_host::gpu::index`), so that a small tensor's segments can be
    /// decoded by several warps each; never read from a file. Reads of it are
    /// bounds-checked (past its end they read 0).
    pub lane_index: &'a [u32],
}

/// Decodes every tensor of `g` into `out`.
///
/// Launch with `block_dim` a multiple of 32 and at least [`TABLE_WORDS`] words
/// of shared memory; any grid size covers any group. Reports in `error`:
/// [`crate::format::ERR_WORD_COUNT`] and the segment when a segment's stream
/// does not match its offsets, [`crate::format::ERR_LAUNCH`] on a bad launch
/// shape (then nothing is decoded).
///
/// Tensors in the lanes layout are skipped: [`decode_group_lanes`] decodes them.
pub fn decode_group<T: Thread, O: GlobalRuns>(t: &T, g: &GroupInput<'_>, out: &O, error: &ErrorReport) {
    for_each_segment::<LAYOUT_WARP, TABLE_WORDS, false, T, O>(t, g, out, error, decode_segment);
}

/// Decodes every tensor of `g` in the lanes layout into `out` (the others are
/// skipped), with one thread per lane stream (`crate::lanes`).
///
/// Launch as [`decode_group`], with at least [`MULTI_TABLE_WORDS`] words of
/// shared memory; `g.tables` holds a multi-symbol table
/// (`crate::table::build_multi`) for each lanes tensor. Reports as
/// [`decode_group`] does, [`ERR_WORD_COUNT`] also for a lane whose stream
/// does not end in its last word followed by zero bits.
pub fn decode_group_lanes<T: Thread, O: GlobalRuns>(t: &T, g: &GroupInput<'_>, out: &O, error: &ErrorReport) {
    for_each_segment::<LAYOUT_LANES, MULTI_TABLE_WORDS, false, T, O>(
        t,
        g,
        out,
        error,
        crate::lanes::decode_segment::<false, T, O>,
    );
}

/// Decodes every tensor of `g` in the lanes9 layout into `out` (the others
/// are skipped), as [`decode_group_lanes`] does the lanes layout: the same
/// threads and loop, a table of `crate::table::build_multi9`, and the raw
/// bytes of FORMAT.md section 12 in `g.sign_mantissa`.
pub fn decode_group_lanes9<T: Thread, O: GlobalRuns>(t: &T, g: &GroupInput<'_>, out: &O, error: &ErrorReport) {
    for_each_segment::<LAYOUT_LANES9, MULTI_TABLE_WORDS, false, T, O>(
        t,
        g,
        out,
        error,
        crate::lanes::decode_segment::<true, T, O>,
    );
}

/// Entry-point name of [`index_group_lanes`] in the PTX module.
pub const INDEX_KERNEL_NAME: &str = "df11_index_group_lanes";

/// Fills the lane index of `g` (`GroupInput::lane_index` is then unused):
/// for each lanes and lanes9 tensor with `slice_rows > 0`, entry `(segment,
/// slice, lane)` of `out` (from `index_base`) is the bit where the lane's
/// slice starts, found by walking its codes with the decode kernels' own
/// lookups; entries of slices past a short last segment are 0. Every entry
/// of those tensors is written once; other tensors are skipped.
///
/// Launch as [`decode_group_lanes`]. On a sound stream the entries are
/// exactly where the decode of the whole segment stands at each slice's
/// first row; on a corrupt one they are some position, which the decode
/// kernels' checks then flag (`df11_host::gpu::index`).
pub fn index_group_lanes<T: Thread, O: GlobalOut<u32>>(t: &T, g: &GroupInput<'_>, out: &O, error: &ErrorReport) {
    for_each_segment::<LAYOUT_LANES, MULTI_TABLE_WORDS, true, T, O>(t, g, out, error, crate::lanes::index_segment);
    for_each_segment::<LAYOUT_LANES9, MULTI_TABLE_WORDS, true, T, O>(t, g, out, error, crate::lanes::index_segment);
}

/// The block loop both kernels share: hands each warp of the block a segment
/// of a tensor of layout `LAYOUT` at a time, with that tensor's `W`-word
/// table in shared memory, and calls `segment` for it.
#[inline(always)]
fn for_each_segment<const LAYOUT: u8, const W: usize, const WHOLE: bool, T: Thread, O>(
    t: &T,
    g: &GroupInput<'_>,
    out: &O,
    error: &ErrorReport,
    segment: impl Fn(&T, &GroupInput<'_>, &TensorDesc, u64, u32, &O, &ErrorReport),
) {
    let block_dim = t.block_dim();
    if !block_dim.is_multiple_of(LANES as u32) || t.shared_len() < W {
        if t.thread_idx() == 0 {
            error.flags.fetch_or(ERR_LAUNCH, Ordering::Relaxed);
        }
        return;
    }
    let warps = u64::from(block_dim) / LANES as u64;
    // Read from lane 0, so that ptxas knows it is warp-uniform: every branch
    // on the segment (its bounds, its row loop) then is, and ptxas need not
    // guard the warp votes and shuffles inside with `BRA.DIV`.
    let warp = u64::from(t.shfl(t.thread_idx() / LANES as u32, 0));
    let num_tensors = g.descs.len() / DESC_WORDS;
    // Everything below is uniform across the block: the barriers are safe.
    let mut tensor = 0;
    let mut first_item = 0u64; // first item of `tensor`
    let mut loaded = usize::MAX; // tensor whose table is in shared memory
    let mut item = u64::from(t.block_idx());
    loop {
        // Items only grow, so the tensor cursor only moves forward.
        let d = loop {
            if tensor == num_tensors {
                return;
            }
            let d = TensorDesc::read(g.descs, tensor);
            // Another kernel's tensors have no items here.
            let items = if d.layout == LAYOUT { units::<LAYOUT, WHOLE>(&d).div_ceil(warps) } else { 0 };
            if item < first_item + items {
                break d;
            }
            first_item += items;
            tensor += 1;
        };
        if loaded != tensor {
            // Every warp must be done with the previous table before it goes.
            t.sync_threads();
            // The bounds are checked once, and every thread makes the same
            // number of trips: a lane-dependent loop with a bounds check (a
            // possible exit) in it would make ptxas guard every warp vote and
            // shuffle of the decode with `BRA.DIV`.
            let table: &[u32; W] =
                g.tables.get(d.table_base as usize..).and_then(|s| s.first_chunk()).expect("table in bounds");
            // `W` (checked above), written so that the compiler sees both
            // bounds checks hold.
            let words = W.min(t.shared_len());
            let mut j = 0;
            while j < W {
                let i = j + t.thread_idx() as usize;
                if i < words {
                    t.shared_store(i, table[i]);
                }
                j += block_dim as usize;
            }
            t.sync_threads();
            loaded = tensor;
        }
        // A unit is a slice of a segment (a whole segment without an index).
        let unit = (item - first_item) * warps + warp;
        if unit < units::<LAYOUT, WHOLE>(&d) {
            // The warp layout has no index: no division in its kernel.
            let slices = if LAYOUT == LAYOUT_WARP || WHOLE { 1 } else { u64::from(d.slices()) };
            let (seg, slice) = if slices == 1 { (unit, 0) } else { (unit / slices, (unit % slices) as u32) };
            segment(t, g, &d, seg, slice, out, error);
        }
        item += u64::from(t.grid_dim());
    }
}

/// The units of work of `d` in the kernel for `LAYOUT`: whole segments for
/// the warp layout (no index, so its kernel does no division) and with
/// `WHOLE` (the index kernel), else [`TensorDesc::units`].
#[inline(always)]
fn units<const LAYOUT: u8, const WHOLE: bool>(d: &TensorDesc) -> u64 {
    if LAYOUT == LAYOUT_WARP || WHOLE { u64::from(d.num_segments) } else { d.units() }
}

/// One warp decodes segment `seg` of tensor `d`; the tensor's table is in
/// shared memory.
#[inline(always)]
fn decode_segment<T: Thread, O: GlobalRuns>(
    t: &T,
    g: &GroupInput<'_>,
    d: &TensorDesc,
    seg: u64,
    _slice: u32,
    out: &O,
    error: &ErrorReport,
) {
    let lane = t.lane_id();
    let oi = d.offset_base as usize + seg as usize;
    let (start, end) = (g.offsets[oi], g.offsets[oi + 1]);
    let base = d.word_base as usize + start as usize;
    let mut s = LaneStream::new(&g.words[base..base + end.saturating_sub(start) as usize], lane, d.max_len);
    let elem0 = seg * u64::from(d.segment_rows) * ROW_ELEMS as u64;
    segment_rows::<0, false, T, O>(t, g, d, elem0, d.segment_len(seg), out, |bytes, valid| {
        s.decode_run(t, bytes, valid)
    });
    let taken = s.taken();
    let seg_words = s.words.len() as u32;
    if lane == 0 && taken != seg_words {
        report_segment(d, seg, error);
    }
}

/// Records segment `seg` of `d` as corrupt.
#[inline(always)]
pub(crate) fn report_segment(d: &TensorDesc, seg: u64, error: &ErrorReport) {
    error.flags.fetch_or(ERR_WORD_COUNT, Ordering::Relaxed);
    let global = u64::from(d.first_segment) + seg;
    error.first_bad_segment.fetch_min(global.min(u64::from(u32::MAX)) as u32, Ordering::Relaxed);
}

/// The row loop both kernels share: for each row of the `seg_len` elements
/// of `d` from element `seg_elem0` (a segment, or a slice of one: a row
/// boundary), this lane's run of sign+mantissa bytes goes to `decode_run`
/// with the
/// number of valid slots, and the run it returns (two bf16 values a word, the
/// first in the low half) is stored. Called by all lanes of a warp together.
///
/// A row's bytes are loaded one row ahead, so that the load's latency hides
/// behind the decoding of a row; with `AHEAD > 0` the bytes `AHEAD` rows
/// ahead are also prefetched into the L2 cache, for a kernel whose rows take
/// less time than a load from memory.
#[inline(always)]
pub(crate) fn segment_rows<const AHEAD: u32, const NINE: bool, T: Thread, O: GlobalRuns>(
    t: &T,
    g: &GroupInput<'_>,
    d: &TensorDesc,
    seg_elem0: u64,
    seg_len: u32,
    out: &O,
    mut decode_run: impl FnMut(u64, u32) -> [u32; LANE_RUN / 2],
) {
    const RUN: u32 = LANE_RUN as u32;
    const ROW: u32 = ROW_ELEMS as u32;
    let lane = t.lane_id();
    // Indices inside a segment fit in u32 (at most 2^24 elements); keeping
    // them narrow saves registers, and with them occupancy.
    let rows = seg_len.div_ceil(ROW);
    let out_base = (d.out_offset + seg_elem0) as usize;
    // The runs of the full rows (all but a tensor's last row), checked here
    // once: a row's store is then one 32-bit compare and the store. `None`
    // (an output offset that is not a multiple of 8) stores element by element.
    let full_rows = seg_len / ROW;
    let runs = out.runs(out_base, full_rows * LANES as u32);
    // This segment's sign+mantissa bytes, 8 (one run) per `u64`; segments
    // start on a row boundary. Cut to the segment so that the row ahead of
    // the last one reads zero, and so that the bound fits in 32 bits.
    // `NINE` (lanes9): 7 raw bytes a run, so a row's are 28 `u64`s and a
    // segment's start on a `u64` too.
    let (sm_start, sm_words) = if NINE {
        (7 * seg_elem0 / 64, rows * (LANES as u32 * RAW9 / 8))
    } else {
        (seg_elem0 / u64::from(RUN), rows * LANES as u32)
    };
    let sm = &g.sign_mantissa[(d.sm_base + sm_start) as usize..];
    let sm_len = sm.len().min(sm_words as usize) as u32;
    // The one check, in 32 bits, is the load's predicate, not a branch.
    let load_word = |i: u32| if i < sm_len { mem::get_or_zero(sm, i as usize) } else { 0 };
    // Run `k`'s bytes: its `u64`, or (lanes9) the 7 from byte `7k` on, from
    // the two `u64`s that hold them (the eighth byte is the next run's).
    let load_sm = |k: u32| {
        if NINE {
            let (i, shift) = (RAW9 * k / 8, 8 * (RAW9 * k % 8));
            (load_word(i) >> shift) | shl_or_zero(load_word(i + 1), 64 - shift)
        } else {
            load_word(k)
        }
    };
    let word_of = |k: u32| if NINE { RAW9 * k / 8 } else { k };
    // Element by element: a partial row, or an output offset that is not a
    // multiple of 8.
    let store_each = |k: u32, run: [u32; LANE_RUN / 2], valid: u32| {
        for i in 0..LANE_RUN {
            out.store_if(out_base + (k * RUN) as usize + i, (run[i / 2] >> (16 * (i % 2))) as u16, (i as u32) < valid);
        }
    };
    // This lane's run of the row, in runs from the segment's start.
    let mut k = lane;
    let mut sm_next = load_sm(k);
    for r in 1..AHEAD {
        mem::prefetch::<true, u64>(&sm[..sm_len as usize], word_of(k + r * LANES as u32) as usize);
    }
    // Every row but a tensor's last is full: decode those with all slots
    // live, so the steps carry no per-slot predicates. One loop per kind of
    // store, so that the loop holds no branch between them.
    let mut full_row = |store: &dyn Fn(u32, [u32; LANE_RUN / 2])| {
        for _ in 0..full_rows {
            let bytes = sm_next;
            sm_next = load_sm(k + LANES as u32);
            if AHEAD > 0 {
                mem::prefetch::<true, u64>(&sm[..sm_len as usize], word_of(k + AHEAD * LANES as u32) as usize);
            }
            let run = decode_run(bytes, RUN);
            store(k, run);
            k += LANES as u32;
        }
    };
    match &runs {
        Some(runs) => full_row(&|k, run| runs.store(k, run)),
        None => full_row(&|k, run| store_each(k, run, RUN)),
    }
    if full_rows < rows {
        let valid = seg_len.saturating_sub(k * RUN).min(RUN);
        let run = decode_run(sm_next, valid);
        store_each(k, run, valid);
    }
}

/// One lane's view of its segment's word stream and its bit buffer.
struct LaneStream<'a> {
    /// The segment's words; reads past the end give zero.
    words: &'a [u32],
    lane: u32,
    /// Mask of the lanes below this one.
    lower_lanes: u32,
    /// This lane's word of the current 32-word window (`a`, or `b` when
    /// `flip`) and of the next one (the other). Only a step that finishes
    /// the current window reads the next, so a window's load has a whole
    /// window's worth of steps (about eleven) to land.
    a: u32,
    b: u32,
    /// Segment word index of the window after the next one.
    fetched: u32,
    /// Words of the current window already handed out (warp-uniform).
    used: u32,
    /// Which of `a` and `b` holds the current window (warp-uniform).
    flip: bool,
    /// A copy of the current window's word (`a` or `b`), taken when the
    /// window starts: selecting it from `a` and `b` at each step would read
    /// the register whose load is in flight, and wait for it.
    cur: u32,
    /// The lane's last two words taken, `prev` first: the lane's unread bits
    /// are the low `64 - consumed` bits of `prev:last` (never more than 43, so
    /// they always lie in these two words). Keeping the words as they came and
    /// only a position, a refill is two register moves and a lookup one 64-bit
    /// shift, where an MSB-aligned buffer needed a 64-bit shift and two ors for
    /// each refill and another 64-bit shift for each code.
    prev: u32,
    last: u32,
    /// Bits of `prev:last` already consumed: `64 - nbits` of FORMAT.md §7.
    consumed: u32,
    /// `consumed` at which `nbits < max_len`: `65 - max_len`.
    refill_at: u32,
    /// `nbits < max_len`, kept up to date for live slots (a lane's slots
    /// stop being live only at its end, and then it never refills again).
    need: bool,
}

impl<'a> LaneStream<'a> {
    #[inline(always)]
    fn new(words: &'a [u32], lane: u32, max_len: u32) -> Self {
        let lanes = LANES as u32;
        let mut s = LaneStream {
            words,
            lane,
            lower_lanes: (1u32 << lane) - 1,
            a: 0,
            b: 0,
            fetched: 2 * lanes,
            used: 0,
            flip: false,
            cur: 0,
            prev: 0,
            last: 0,
            // `nbits = 0`, or, for `max_len == 0`, any value: nothing is ever
            // consumed and every entry is the same.
            consumed: if max_len == 0 { 0 } else { 64 },
            // `max_len <= 12` for any valid tensor; a corrupt one still decodes
            // without overflow (and fails its word count).
            refill_at: 65u32.saturating_sub(max_len),
            need: 0 < max_len,
        };
        s.a = s.fetch(lane);
        s.b = s.fetch(lanes + lane);
        s.cur = s.a;
        s
    }

    /// Words handed out so far (warp-uniform): all windows before the
    /// current one, plus its used part.
    #[inline(always)]
    fn taken(&self) -> u32 {
        self.fetched - 2 * LANES as u32 + self.used
    }

    /// Word `i` of the segment. Reads are clamped to the segment: a corrupt
    /// stream reads zeros past its end (and is reported by the caller), never
    /// another segment's words.
    #[inline(always)]
    fn fetch(&self, i: u32) -> u32 {
        mem::get_or_zero(self.words, i as usize)
    }

    /// This lane's run of a row: the first `valid` slots decoded and joined
    /// with their bytes of `sm` (the other slots hold no decoded value), two
    /// bf16 values per word, the first in the low half. Warp-convergent, like
    /// [`LaneStream::decode`].
    #[inline(always)]
    fn decode_run<T: Thread>(&mut self, t: &T, sm: u64, valid: u32) -> [u32; LANE_RUN / 2] {
        // Written out rather than looped: the steps must stay in registers
        // (a loop with warp votes in it is not unrolled reliably).
        macro_rules! elem {
            ($k:literal) => {
                self.decode(t, $k < valid)
            };
        }
        let exp = [elem!(0), elem!(1), elem!(2), elem!(3), elem!(4), elem!(5), elem!(6), elem!(7)];
        // `bits::join` two slots at a time in 32-bit words, from the table
        // entries themselves (symbol in the low byte, length below 128 in the
        // high one): one byte permute puts each slot's sign+mantissa byte
        // twice in its half (mantissa from the low copy, sign from the high
        // one, the rest masked off), another the two symbols in bytes 0 and
        // 2 with zeros (the lengths' sign bits replicated) in bytes 1 and 3;
        // shifted by 7 they fill the exponent bits, which the mask cleared.
        // Four instructions a pair, all off the steps' chain.
        let sm = [sm as u32, (sm >> 32) as u32];
        core::array::from_fn(|j| {
            let b = byte_perm(sm[j / 2], 0, if j % 2 == 0 { 0x1100 } else { 0x3322 });
            let e = byte_perm(exp[2 * j], exp[2 * j + 1], 0xd490);
            (b & 0x807f_807f) + (e << 7)
        })
    }

    /// One warp step of FORMAT.md §7: refill if needed, look up, and (for a
    /// `live` slot) consume one code and return its table entry, the
    /// exponent in its low byte (0 otherwise).
    /// Must be called by all lanes of the warp together.
    ///
    /// The step is one serial chain per warp (table load -> refill vote ->
    /// rank -> shuffle -> table index -> next table load), so it is written
    /// to keep that chain short: no test of the vote, one shuffle (a second
    /// only when a window runs out), the only branch a uniform one around
    /// the window advance, with its predicate ready long before, and the table
    /// index built from the shuffled word in three operations (select, 64-bit
    /// shift, shift). Every 32-bit operation here is one instruction and the
    /// warp is issue-bound when several share a scheduler, so the step also
    /// keeps its instruction count low: 22 SASS instructions on sm_90 when
    /// the window does not run out, the branch included. ptxas adds no
    /// convergence guards (`BRA.DIV`, `BSSY`/`BSYNC`): every branch of the
    /// loop nest is warp-uniform to it (see `crate::mem`), and the window
    /// advance holds no branch.
    #[inline(always)]
    fn decode<T: Thread>(&mut self, t: &T, live: bool) -> u32 {
        let lanes = LANES as u32;
        let need = live && self.need;
        let mask = t.ballot(need);
        // Lanes refill in lane order: this lane's word comes after those of
        // the refilling lanes below it, at `pos` in the window followed by the next.
        let pos = self.used + (mask & self.lower_lanes).count_ones();
        let mut w = t.shfl(self.cur, pos);
        self.used += mask.count_ones();
        if self.used >= lanes {
            // The window is used up (uniform; one step in about eleven).
            // Only here is the next one read: any other use of it would wait
            // for its load every step.
            let next = if self.flip { self.a } else { self.b };
            let w_next = t.shfl(next, pos);
            self.cur = next;
            if pos >= lanes {
                w = w_next;
            }
            self.used -= lanes;
            // The used-up window's register takes the window after `next`,
            // loaded straight into it (predicated, no branch): a copy
            // `window = next` would make ptxas load into a temporary and
            // wait for the load to copy it.
            let i = self.fetched + self.lane;
            mem::get_or_zero_into(&mut self.a, &mut self.b, self.flip, self.words, i as usize);
            self.flip = !self.flip;
            self.fetched += lanes;
        }
        if need {
            // The refill word comes after `last`; `nbits < max_len <= 32`, so
            // no unread bit is in `prev` (FORMAT.md §7's `buf |= w << ...`).
            self.prev = self.last;
            self.last = w;
            self.consumed = self.consumed.wrapping_sub(WORD_BITS);
        }
        // The table index: the next 12 unread bits. Past the `nbits >=
        // max_len` unread bits the index holds garbage, which no entry looks
        // at (a code is at most `max_len` bits). A slot that is not live
        // (past a lane's end) may have `nbits` below `max_len`, even 0, and
        // its entry is not used: it looks up at shift 0 (a constant `live`
        // on full rows makes that free).
        let shift = if live { self.consumed } else { 0 };
        let bits = u64::from(self.prev) << WORD_BITS | u64::from(self.last);
        // `shift < 64` for a table the host built from the tensor's validated
        // code lengths: no entry is longer than `max_len`, so a live slot has
        // `nbits >= max_len` here (just refilled if it was less) and
        // `consumed <= 64 - max_len`. The tables are the caller's data,
        // though, so a longer shift must stay defined: it gives index 0 (a
        // garbage entry, and the word count reports the segment).
        let entry = t.shared_load_u16((shl_or_zero(bits, shift) >> (u64::BITS - TABLE_BITS)) as usize);
        if live {
            // A valid table never consumes past `nbits`: `consumed <= 64`
            // (wrapping: a corrupt descriptor must not panic the emulator).
            self.consumed = self.consumed.wrapping_add(entry_len(entry));
            self.need = self.consumed >= self.refill_at;
            u32::from(entry)
        } else {
            0
        }
    }
}

/// `x << s`, or 0 for `s >= 64`: one `shl.b64` on the GPU, whose shift
/// clamps, where a Rust shift needs a mask or a compare for the same.
#[inline(always)]
pub(crate) fn shl_or_zero(x: u64, s: u32) -> u64 {
    #[cfg(target_arch = "nvptx64")]
    {
        crate::arch::shl_b64(x, s)
    }
    #[cfg(not(target_arch = "nvptx64"))]
    {
        x.checked_shl(s).unwrap_or(0)
    }
}

/// `prmt.b32` (one instruction on the GPU): byte `i` of the result is byte
/// `n & 7` of `b:a` (`a` holding bytes 0..4), `n = sel >> 4 * i & 15`, or,
/// when `n & 8` is set, that byte's top bit copied into all eight.
#[inline(always)]
pub(crate) fn byte_perm(a: u32, b: u32, sel: u32) -> u32 {
    #[cfg(target_arch = "nvptx64")]
    {
        crate::arch::prmt(a, b, sel)
    }
    #[cfg(not(target_arch = "nvptx64"))]
    {
        let src = u64::from(b) << 32 | u64::from(a);
        (0..4).fold(0, |d, i| {
            let n = sel >> (4 * i) & 15;
            let byte = (src >> (8 * (n & 7))) as u8;
            let byte = if n & 8 == 0 { byte } else { ((byte as i8) >> 7) as u8 };
            d | u32::from(byte) << (8 * i)
        })
    }
}
