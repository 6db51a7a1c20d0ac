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
    DESC_WORDS, ERR_LAUNCH, ERR_WORD_COUNT, LANE_RUN, LANES, ROW_ELEMS, TABLE_BITS, TABLE_SIZE, TABLE_WORDS, WORD_BITS,
};
use crate::table::{entry_len, entry_symbol};
use crate::thread::{GlobalOut, Thread};
use core::sync::atomic::{AtomicU32, Ordering};

/// Entry-point name of [`decode_group`] in the PTX module.
pub const KERNEL_NAME: &str = "df11_decode_group";

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
    /// Index in `offsets` of the tensor's `segment_offsets[0]`.
    pub offset_base: u64,
    /// Index in `tables` of the tensor's decode table ([`TABLE_WORDS`] words).
    pub table_base: u64,
    /// Rows per segment (R).
    pub segment_rows: u32,
    /// Segments (S).
    pub num_segments: u32,
    /// Longest code length; refills happen below it.
    pub max_len: u32,
    /// Group-wide index of the tensor's segment 0 (segments of all tensors
    /// numbered in order), for error reports; saturates at `u32::MAX`.
    pub first_segment: u32,
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
            self.max_len as u64 | (self.first_segment as u64) << 32,
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
            max_len: w[7] as u32,
            first_segment: (w[7] >> 32) as u32,
        }
    }
}

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
    /// Every tensor's `segment_offsets` (S + 1 each), back to back.
    pub offsets: &'a [u32],
    /// Every tensor's sign+mantissa bytes, little-endian in `u64`s, each tensor
    /// zero-padded to a multiple of 8 bytes.
    pub sign_mantissa: &'a [u64],
    /// One decode table per tensor, [`TABLE_WORDS`] words each.
    pub tables: &'a [u32],
}

/// Decodes every tensor of `g` into `out`.
///
/// Launch with `block_dim` a multiple of 32 and at least [`TABLE_WORDS`] words
/// of shared memory; any grid size covers any group. Reports in `error`:
/// [`crate::format::ERR_WORD_COUNT`] and the segment when a segment's stream
/// does not match its offsets, [`crate::format::ERR_LAUNCH`] on a bad launch
/// shape (then nothing is decoded).
pub fn decode_group<T: Thread, O: GlobalOut<u16>>(t: &T, g: &GroupInput<'_>, out: &O, error: &ErrorReport) {
    let block_dim = t.block_dim();
    if !block_dim.is_multiple_of(LANES as u32) || t.shared_len() < TABLE_WORDS {
        if t.thread_idx() == 0 {
            error.flags.fetch_or(ERR_LAUNCH, Ordering::Relaxed);
        }
        return;
    }
    let warps = u64::from(block_dim) / LANES as u64;
    let warp = u64::from(t.thread_idx()) / LANES as u64;
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
            let items = u64::from(d.num_segments).div_ceil(warps);
            if item < first_item + items {
                break d;
            }
            first_item += items;
            tensor += 1;
        };
        if loaded != tensor {
            // Every warp must be done with the previous table before it goes.
            t.sync_threads();
            let mut i = t.thread_idx() as usize;
            while i < TABLE_WORDS {
                t.shared_store(i, g.tables[d.table_base as usize + i]);
                i += block_dim as usize;
            }
            t.sync_threads();
            loaded = tensor;
        }
        let seg = (item - first_item) * warps + warp;
        if seg < u64::from(d.num_segments) {
            decode_segment(t, g, &d, seg, out, error);
        }
        item += u64::from(t.grid_dim());
    }
}

/// One warp decodes segment `seg` of tensor `d`; the tensor's table is in
/// shared memory.
#[inline(always)]
fn decode_segment<T: Thread, O: GlobalOut<u16>>(
    t: &T,
    g: &GroupInput<'_>,
    d: &TensorDesc,
    seg: u64,
    out: &O,
    error: &ErrorReport,
) {
    const RUN: u32 = LANE_RUN as u32;
    const ROW: u32 = ROW_ELEMS as u32;
    let lane = t.lane_id();
    let seg_elem0 = seg * u64::from(d.segment_rows) * u64::from(ROW);
    // Indices inside a segment fit in u32 (at most 2^24 elements); keeping them
    // narrow saves registers, and with them occupancy.
    let seg_len = d.num_elements.saturating_sub(seg_elem0).min(u64::from(d.segment_rows) * u64::from(ROW)) as u32;
    let rows = seg_len.div_ceil(ROW);
    let oi = d.offset_base as usize + seg as usize;
    let (start, end) = (g.offsets[oi], g.offsets[oi + 1]);
    let base = d.word_base as usize + start as usize;
    let mut s = LaneStream::new(&g.words[base..base + end.saturating_sub(start) as usize], lane, d.max_len);
    // 16-byte stores need the run's output index to be a multiple of 8.
    let aligned = d.out_offset.is_multiple_of(u64::from(RUN));
    let out_base = (d.out_offset + seg_elem0) as usize;
    // Segments start on a row boundary, so on a whole `u64` of bytes.
    let sm = &g.sign_mantissa[(d.sm_base + seg_elem0 / u64::from(RUN)) as usize..];
    // This lane's 8 sign+mantissa bytes of the run at `e`. A run past the
    // segment's end reads the next segment's bytes (or zero past the buffer)
    // and never joins them; the one check compiles to a predicated load, not
    // to branches at the top of every row.
    let load_sm = |e: u32| sm.get((e / RUN) as usize).copied().unwrap_or(0);
    let mut e = lane * RUN; // this lane's first element of the row, in the segment
    // One row ahead: a row's bytes are loaded while the previous row decodes,
    // so the load's latency hides behind 8 decode steps.
    let mut sm_next = load_sm(e);
    for _ in 0..rows {
        let valid = seg_len.saturating_sub(e).min(RUN);
        let bytes = sm_next;
        sm_next = load_sm(e + ROW);
        // Every row but a tensor's last is full: decode those with `valid`
        // known to be 8, so the steps carry no per-slot predicates. The test
        // is warp-uniform (`e - 8 * lane` is the row start), as it must be:
        // both paths hold warp votes.
        let run =
            if e - lane * RUN + ROW <= seg_len { s.decode_run(t, bytes, RUN) } else { s.decode_run(t, bytes, valid) };
        let o = out_base + e as usize;
        // Split into bf16 values only here, next to each store: split before
        // the branch, the 16-byte store would pay to join them again.
        let half = |k: usize| (run[k / 2] >> (16 * (k % 2))) as u16;
        if valid == RUN && aligned {
            out.store8(o, core::array::from_fn(half));
        } else {
            for k in 0..LANE_RUN {
                if (k as u32) < valid {
                    out.store(o + k, half(k));
                }
            }
        }
        e += ROW;
    }
    let taken = s.taken();
    let seg_words = s.words.len() as u32;
    if lane == 0 && taken != seg_words {
        error.flags.fetch_or(ERR_WORD_COUNT, Ordering::Relaxed);
        let global = u64::from(d.first_segment) + seg;
        error.first_bad_segment.fetch_min(global.min(u64::from(u32::MAX)) as u32, Ordering::Relaxed);
    }
}

/// One lane's view of its segment's word stream and its bit buffer.
struct LaneStream<'a> {
    /// The segment's words; reads past the end give zero.
    words: &'a [u32],
    lane: u32,
    /// Mask of the lanes below this one.
    lower_lanes: u32,
    max_len: u32,
    /// This lane's word of the current 32-word window, and of the next one.
    /// Only a step that finishes `window` reads `next`, so a window's load
    /// has a whole window's worth of steps (about eleven) to land.
    window: u32,
    next: u32,
    /// Segment word index of the window after `next`.
    fetched: u32,
    /// Words of `window` already handed out (warp-uniform).
    used: u32,
    /// MSB-aligned bit buffer: the top `nbits` bits are the lane's next bits.
    buf: u64,
    nbits: u32,
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
            max_len,
            window: 0,
            next: 0,
            fetched: 2 * lanes,
            used: 0,
            buf: 0,
            nbits: 0,
            need: 0 < max_len,
        };
        s.window = s.fetch(lane);
        s.next = s.fetch(lanes + lane);
        s
    }

    /// Words handed out so far (warp-uniform): all windows before `window`,
    /// plus the used part of `window`.
    #[inline(always)]
    fn taken(&self) -> u32 {
        self.fetched - 2 * LANES as u32 + self.used
    }

    /// Word `i` of the segment. Reads are clamped to the segment: a corrupt
    /// stream reads zeros past its end (and is reported by the caller), never
    /// another segment's words.
    #[inline(always)]
    fn fetch(&self, i: u32) -> u32 {
        self.words.get(i as usize).copied().unwrap_or(0)
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
        // `bits::join` two slots at a time in 32-bit words: a third of the
        // instructions of eight 16-bit joins, which otherwise all run between
        // the rows' step chains.
        core::array::from_fn(|j| {
            let b = (sm >> (16 * j)) as u32;
            let s = (b & 0xff) | (b & 0xff00) << 8; // the two bytes, one per half
            let e = exp[2 * j] | exp[2 * j + 1] << 16;
            (s & 0x0080_0080) << 8 | (s & 0x007f_007f) | e << 7
        })
    }

    /// One warp step of FORMAT.md §7: refill if needed, look up, and (for a
    /// `live` slot) consume one code and return its exponent (0 otherwise).
    /// Must be called by all lanes of the warp together.
    ///
    /// The step is one serial chain per warp (table load -> refill vote ->
    /// rank -> shuffle -> table index -> next table load), so it is written
    /// to keep that chain short: no test of the vote, one shuffle (a second
    /// only when a window runs out), the only branches uniform ones around
    /// the window advance, with predicates ready long before, and the table
    /// index built from the shuffled word in three operations.
    #[inline(always)]
    fn decode<T: Thread>(&mut self, t: &T, live: bool) -> u32 {
        let lanes = LANES as u32;
        let need = live && self.need;
        let mask = t.ballot(need);
        // Lanes refill in lane order: this lane's word comes after those of
        // the refilling lanes below it, at `pos` in `window` followed by `next`.
        let pos = self.used + (mask & self.lower_lanes).count_ones();
        let mut w = t.shfl(self.window, pos);
        let mut advanced = false;
        self.used += mask.count_ones();
        if self.used >= lanes {
            // `window` is used up (uniform; one step in about eleven). Only
            // here is `next` read: any other read of it, even a select, would
            // wait for its load every step.
            let w_next = t.shfl(self.next, pos);
            if pos >= lanes {
                w = w_next;
            }
            self.window = self.next;
            self.used -= lanes;
            advanced = true;
        }
        // The table index: the buffer's top 12 bits, with the refill word's
        // bits appended below the `nbits` valid ones (`w >> 32` is 0, so a
        // lane that does not refill keeps its index; `nbits < max_len <= 12`
        // when it does). The parts do not overlap, so `|` joins them; the mask
        // changes nothing but proves the index in range (no bounds check).
        let top = (self.buf >> (u64::BITS - TABLE_BITS)) as u32;
        let shift = if need { self.nbits + (WORD_BITS - TABLE_BITS) } else { WORD_BITS };
        let low = (u64::from(w) >> shift) as u32 & (TABLE_SIZE as u32 - 1);
        let entry = t.shared_load_u16((top | low) as usize);
        if need {
            self.buf |= u64::from(w) << (WORD_BITS - self.nbits);
            self.nbits += WORD_BITS;
        }
        if advanced {
            // A block of its own after the table load, so that the load is
            // issued into `next` itself: issued earlier, it would land in a
            // temporary whose copy into `next` waits for the load.
            self.next = self.fetch(self.fetched + self.lane);
            self.fetched += lanes;
        }
        if live {
            let len = entry_len(entry);
            self.buf <<= len;
            // The next step's refill test `nbits - len < max_len`, asked of
            // the entry itself (`len` is its high byte, so `len > nbits -
            // max_len` is `entry >= (nbits - max_len + 1) << 8`): one compare
            // between the table load and the vote. A live lane has `nbits >=
            // max_len` here, so the subtraction does not wrap.
            self.need = u32::from(entry) >= (self.nbits - self.max_len + 1) << 8;
            self.nbits -= len;
            u32::from(entry_symbol(entry))
        } else {
            0
        }
    }
}
