//! The CPU decoders: one entry point, [`decode_into`] (and the allocating
//! [`decode`]), for both layouts of `docs/FORMAT.md`.
//!
//! A tensor is a sequence of independent segments, so the work is split in
//! two levels:
//!
//! * This module checks the tensor once ([`CompressedTensor::validate`], the
//!   output length, the code table), then hands runs of whole segments to the
//!   calling thread or to the current rayon pool ([`DecodeOptions::parallel`]),
//!   and combines the runs' CRCs into the tensor's.
//! * Each segment goes to the decoder of its layout:
//!   - `warp`: the warp layout (section 7), whose 32 lane streams are
//!     interleaved word by word as a GPU warp reads them. The 32 lanes are
//!     decoded in one loop, sharing one word cursor.
//!   - `lanes`: the lanes layout (section 8), whose lane streams are stored
//!     whole. Four lanes are decoded at a time with a multi-symbol table into
//!     per-lane exponent buffers, and `join` then merges those with the
//!     sign+mantissa bytes (SSE2 on x86-64), checksumming as it stores.
//!
//! Contract: any `CompressedTensor` is safe to pass. Corrupt stream words
//! cannot make a decoder panic or read out of bounds; a segment whose streams
//! do not end where its offsets say is reported as `CorruptStream`. The data
//! CRC is checked unless [`DecodeOptions::verify_crc`] is off.

mod join;
mod join9;
mod lanes;
mod warp;

use crate::CompressedTensor;
use crate::container::{Layout, TensorView, Unchecked, data_crc_append};
use crate::error::{Error, Result};
use df11_gpu::format::{LANE_RUN, RAW9_GROUP_BYTES};
use df11_gpu::format::{LANES, TABLE_SIZE};
use df11_gpu::table::{self, Entry};
use lanes::{LaneBufs, MultiTable, Stream};
use rayon::prelude::*;
use std::borrow::Cow;
use std::cell::RefCell;

/// Where a decoded tensor first differs from the expected elements: the
/// element's index and what was decoded there.
pub type Difference = (u64, u16);

/// How [`decode_into`] decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Check the CRC32C of the decoded output against `data_crc` (default on).
    pub verify_crc: bool,
    /// Spread the segments over the current rayon pool (default on); run the
    /// call inside `ThreadPool::install` to choose the thread count. Off, the
    /// calling thread decodes everything.
    pub parallel: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { verify_crc: true, parallel: true }
    }
}

/// Decodes `t` into `out`, which must hold exactly its element count, as
/// `opts` says.
pub fn decode_into(t: &CompressedTensor, out: &mut [u16], opts: &DecodeOptions) -> Result<()> {
    decode_view_into(&t.view(), out, opts)
}

/// [`decode_into`] for a tensor whose data is borrowed, e.g. parsed in place
/// from a memory-mapped file with [`TensorView::from_bytes`].
pub fn decode_view_into(t: &TensorView, out: &mut [u16], opts: &DecodeOptions) -> Result<()> {
    let p = prepare(t, out.len())?;
    let want = Want { data: opts.verify_crc, record: false, stream_out: p.stream_out };
    let sums = decode_sums(&p, t, out, want, opts.parallel)?;
    check_data_crc(t, sums.data, opts)
}

/// Decodes the tensor of a single-tensor container's bytes into `out`, in
/// place: what [`TensorView::from_bytes`] then [`decode_view_into`] do, in
/// one pass over the record. Each segment's words and sign+mantissa bytes
/// are checksummed for the record CRC just before they are decoded, while
/// they are in cache, instead of in a pass of their own. Any corrupt record
/// is reported as [`TensorView::from_bytes`] reports it.
pub fn decode_container_into(bytes: &[u8], out: &mut [u16], opts: &DecodeOptions) -> Result<()> {
    if cfg!(target_endian = "big") {
        return decode_view_into(&TensorView::from_bytes(bytes)?, out, opts);
    }
    let mut run = || {
        let u = Unchecked::parse(bytes)?;
        let p = prepare(&u.view, out.len())?;
        let want = Want { data: opts.verify_crc, record: true, stream_out: p.stream_out };
        let sums = decode_sums(&p, &u.view, out, want, opts.parallel)?;
        u.check(sums.words, sums.sm)?;
        check_data_crc(&u.view, sums.data, opts)
    };
    run().or_else(|e| strict_first(bytes, e))
}

/// [`compare_view`] of the tensor of a single-tensor container's bytes, in
/// place and in one pass over the record as [`decode_container_into`] does.
/// A difference is only reported for a record whose checksums hold.
pub fn compare_container(bytes: &[u8], expected: &[u16], opts: &DecodeOptions) -> Result<Option<Difference>> {
    if cfg!(target_endian = "big") {
        return compare_view(&TensorView::from_bytes(bytes)?, expected, opts);
    }
    let run = || {
        let u = Unchecked::parse(bytes)?;
        let p = prepare(&u.view, expected.len())?;
        let want = Want { data: opts.verify_crc, record: true, stream_out: false };
        let (sums, diff) = compare_sums(&p, &u.view, expected, want, opts.parallel)?;
        if diff.is_some() {
            return Ok(diff);
        }
        u.check(sums.words, sums.sm)?;
        check_data_crc(&u.view, sums.data, opts).map(|()| None)
    };
    match run() {
        Ok(None) => Ok(None),
        Ok(Some(d)) => TensorView::from_bytes(bytes).map(|_| Some(d)),
        Err(e) => strict_first(bytes, e),
    }
}

/// Decodes the tensor of a single-tensor container's bytes a run of whole
/// segments at a time, each into a buffer the caller then uses (writes to a
/// file, say) before the next: so a tensor of any size goes through a
/// buffer of a few segments, which stays in cache, instead of a buffer of
/// its size. The checks are [`decode_container_into`]'s: the record CRC
/// from each segment's words and bytes as they are decoded, the data CRC,
/// and any failure reported as the strict parse reports it; the CRCs can
/// only be checked at the end, by [`Runs::finish`], so a caller must not
/// take the runs for the tensor until that returns `Ok`.
pub struct Runs<'a> {
    bytes: &'a [u8],
    u: Unchecked<'a>,
    p: Prepared<'a>,
    opts: DecodeOptions,
    next_seg: usize,
    done: usize,
    sums: Sums,
}

impl<'a> Runs<'a> {
    /// Parses the container (everything but its CRCs, which come with the runs).
    pub fn new(bytes: &'a [u8], opts: &DecodeOptions) -> Result<Self> {
        let start = || {
            let u = Unchecked::parse(bytes)?;
            let p = prepare(&u.view, u.view.num_elements as usize)?;
            Ok((u, p))
        };
        let (u, p) = start().or_else(|e| strict_first(bytes, e))?;
        Ok(Runs { bytes, u, p, opts: *opts, next_seg: 0, done: 0, sums: Sums::default() })
    }

    /// Elements of the tensor.
    pub fn num_elements(&self) -> u64 {
        self.u.view.num_elements
    }

    /// Elements of a full segment: a run buffer holds at least one segment
    /// (or what is left of the tensor).
    pub fn segment_elems(&self) -> usize {
        self.p.seg_elems
    }

    /// Decodes the next whole segments that fit into the start of `buf` and
    /// returns how many elements it wrote there: 0 once the tensor is done.
    /// `buf` must hold a full segment, or all that is left.
    pub fn next_into(&mut self, buf: &mut [u16]) -> Result<usize> {
        let left = self.u.view.num_elements as usize - self.done;
        let seg = self.p.seg_elems;
        let n = if buf.len() >= left { left } else { buf.len() / seg * seg };
        if n == 0 && left > 0 {
            return Err(Error::OutputLength { expected: left.min(seg) as u64, actual: buf.len() as u64 });
        }
        if n == 0 {
            return Ok(0);
        }
        let want = Want { data: self.opts.verify_crc, record: cfg!(target_endian = "little"), stream_out: false };
        let out = &mut buf[..n];
        match decode_segments(&self.p, &self.u.view, self.next_seg, out, want, self.opts.parallel) {
            Ok(run) => self.sums = self.sums.then(run, n),
            Err(e) => return strict_first(self.bytes, e),
        }
        self.next_seg += n.div_ceil(seg);
        self.done += n;
        Ok(n)
    }

    /// After the last run: checks the record CRC and, if
    /// [`DecodeOptions::verify_crc`], the data CRC. Fails if runs are left.
    pub fn finish(self) -> Result<()> {
        let left = self.u.view.num_elements - self.done as u64;
        if left > 0 {
            return Err(Error::OutputLength { expected: self.u.view.num_elements, actual: self.done as u64 });
        }
        let check = || {
            if cfg!(target_endian = "little") {
                self.u.check(self.sums.words, self.sums.sm)?;
            } else {
                TensorView::from_bytes(self.bytes)?;
            }
            check_data_crc(&self.u.view, self.sums.data, &self.opts)
        };
        check().or_else(|e| strict_first(self.bytes, e))
    }
}

/// After a failure of the one-pass decode: the strict parse's error if it
/// finds one (a record checksum mismatch, say, is what corrupt bytes are
/// reported as), else `e`.
fn strict_first<R>(bytes: &[u8], e: Error) -> Result<R> {
    TensorView::from_bytes(bytes)?;
    Err(e)
}

fn check_data_crc(t: &TensorView, crc: u32, opts: &DecodeOptions) -> Result<()> {
    if opts.verify_crc && crc != t.data_crc {
        return Err(Error::Checksum { what: "data", stored: t.data_crc, computed: crc });
    }
    Ok(())
}

/// What a run of segments computes as it decodes.
#[derive(Clone, Copy)]
struct Want {
    /// The output's CRC.
    data: bool,
    /// The CRCs of the segments' words and sign+mantissa bytes (the record
    /// CRC's parts; little-endian hosts only, where words are stored as is).
    record: bool,
    /// Write the output around the caches.
    stream_out: bool,
}

/// The CRCs a run of segments accumulates ([`Want`]), each of the run alone.
#[derive(Clone, Copy, Default)]
struct Sums {
    data: u32,
    words: u32,
    word_bytes: u64,
    sm: u32,
    sm_bytes: u64,
}

impl Sums {
    /// These sums followed by those of the next run, of `elems` elements.
    fn then(self, next: Sums, elems: usize) -> Sums {
        use crate::crc::combine;
        Sums {
            data: combine(self.data, next.data, 2 * elems as u64),
            words: combine(self.words, next.words, next.word_bytes),
            word_bytes: self.word_bytes + next.word_bytes,
            sm: combine(self.sm, next.sm, next.sm_bytes),
            sm_bytes: self.sm_bytes + next.sm_bytes,
        }
    }
}

/// Decodes all of `t` into `out`, in tasks of whole segments on the rayon
/// pool if `parallel`, and returns the sums of the whole.
fn decode_sums(p: &Prepared, t: &TensorView, out: &mut [u16], want: Want, parallel: bool) -> Result<Sums> {
    decode_segments(p, t, 0, out, want, parallel)
}

/// [`decode_sums`] of the segments from `first_seg` on that `out` holds.
fn decode_segments(
    p: &Prepared,
    t: &TensorView,
    first_seg: usize,
    out: &mut [u16],
    want: Want,
    parallel: bool,
) -> Result<Sums> {
    if !parallel {
        let mut sums = Sums::default();
        decode_range(p, t, first_seg, out, &[], want, &mut sums)?;
        return Ok(sums);
    }
    let segs_per_task = (TASK_ELEMS / p.seg_elems).max(1);
    let parts = out
        .par_chunks_mut(p.seg_elems * segs_per_task)
        .enumerate()
        .map(|(i, chunk)| {
            let mut sums = Sums::default();
            decode_range(p, t, first_seg + i * segs_per_task, chunk, &[], want, &mut sums).map(|_| (sums, chunk.len()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(parts.into_iter().fold(Sums::default(), |acc, (s, n)| acc.then(s, n)))
}

/// Decodes `t` and compares it with `expected`, which must hold exactly its
/// element count, without storing the output: the lanes layouts' joins
/// compare each full row with `expected` from the registers they build it
/// in, and the rest goes segment by segment through a per-thread buffer of
/// one segment, which stays in cache for the compare. Returns the index of
/// the first element that differs and the element decoded there, `None` if
/// every one is equal. Errors as [`decode_view_into`] does, a data CRC that
/// does not match the decoded elements included (when
/// [`DecodeOptions::verify_crc`] is on and they all equal `expected`).
///
/// This is a checkpoint verification's inner loop: against decoding into a
/// buffer and comparing that, it saves writing the output to memory and
/// reading it back.
pub fn compare_view(t: &TensorView, expected: &[u16], opts: &DecodeOptions) -> Result<Option<Difference>> {
    let p = prepare(t, expected.len())?;
    let want = Want { data: opts.verify_crc, record: false, stream_out: false };
    let (sums, diff) = compare_sums(&p, t, expected, want, opts.parallel)?;
    if diff.is_some() {
        return Ok(diff);
    }
    check_data_crc(t, sums.data, opts).map(|()| None)
}

/// [`compare_view`]'s work: the sums of the whole (complete only if no
/// difference was found) and the first difference.
fn compare_sums(
    p: &Prepared,
    t: &TensorView,
    expected: &[u16],
    want: Want,
    parallel: bool,
) -> Result<(Sums, Option<Difference>)> {
    let segs_per_task = (TASK_ELEMS / p.seg_elems).max(1);
    let task_elems = p.seg_elems * segs_per_task;
    let task = |(i, chunk): (usize, &[u16])| -> Result<(Sums, usize, Option<Difference>)> {
        let mut sums = Sums::default();
        let diff = compare_range(p, t, i * segs_per_task, chunk, want, &mut sums)?;
        Ok((sums, chunk.len(), diff.map(|(d, got)| ((i * task_elems + d) as u64, got))))
    };
    let parts: Vec<_> = if parallel {
        expected.par_chunks(task_elems).enumerate().map(task).collect::<Result<_>>()?
    } else {
        let mut v = Vec::new();
        for r in expected.chunks(task_elems).enumerate().map(task) {
            let r = r?;
            let differs = r.2.is_some();
            v.push(r);
            if differs {
                break;
            }
        }
        v
    };
    let diff = parts.iter().filter_map(|r| r.2).min();
    Ok((parts.into_iter().fold(Sums::default(), |acc, (s, n, _)| acc.then(s, n)), diff))
}

thread_local! {
    /// Each thread's one-segment output buffer for [`compare_view`].
    static SEGMENT_BUF: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// Compares the segments from `first_seg` on that `expected` holds, adding
/// to `sums`: the first difference (index, decoded element), where the
/// compare stopped.
fn compare_range(
    p: &Prepared,
    t: &TensorView,
    first_seg: usize,
    expected: &[u16],
    want: Want,
    sums: &mut Sums,
) -> Result<Option<(usize, u16)>> {
    SEGMENT_BUF.with_borrow_mut(|buf| {
        for (i, want_seg) in expected.chunks(p.seg_elems).enumerate() {
            if buf.len() < want_seg.len() {
                buf.resize(want_seg.len(), 0);
            }
            let got = &mut buf[..want_seg.len()];
            if decode_range(p, t, first_seg + i, got, want_seg, want, sums)? {
                // Rare: decode the segment again, whole, to say where. (Its
                // decode is deterministic, so a difference is found; were it
                // not, element 0 is reported rather than none.)
                let again = Want { data: false, record: false, stream_out: false };
                decode_range(p, t, first_seg + i, got, &[], again, &mut Sums::default())?;
                let at = got.iter().zip(want_seg).position(|(a, b)| a != b);
                debug_assert!(at.is_some(), "a compared difference is found again");
                let at = at.unwrap_or(0);
                return Ok(Some((i * p.seg_elems + at, got[at])));
            }
        }
        Ok(None)
    })
}

/// Decodes elements `start .. start + out.len()` of `t` into `out`: only the
/// segments that hold them are decoded (the first and last through a
/// one-segment scratch when the range cuts them), on the current rayon pool
/// when [`DecodeOptions::parallel`] is on.
///
/// Segments are independent, so this is how a reader takes a few rows of an
/// embedding matrix, or a large matrix in pieces, without decoding the whole
/// tensor. The data CRC covers the whole tensor and cannot be checked here
/// ([`DecodeOptions::verify_crc`] is ignored); the structure is validated as
/// for [`decode_into`], and a corrupt stream is still reported.
pub fn decode_range_into(t: &CompressedTensor, start: u64, out: &mut [u16], opts: &DecodeOptions) -> Result<()> {
    let t = &t.view();
    let end = start.checked_add(out.len() as u64).filter(|&e| e <= t.num_elements);
    let Some(end) = end else {
        return Err(Error::OutputLength { expected: t.num_elements.saturating_sub(start), actual: out.len() as u64 });
    };
    let p = prepare(t, t.num_elements as usize)?;
    let want = Want { data: false, record: false, stream_out: p.stream_out };
    if start == end {
        return Ok(());
    }
    let seg = p.seg_elems as u64;
    let (first, last) = ((start / seg) as usize, ((end - 1) / seg) as usize);
    // Cut `out` at segment boundaries: piece `i` is segment `first + i`'s part.
    let mut pieces = Vec::with_capacity(last - first + 1);
    let mut rest = out;
    for s in first..=last {
        let s0 = (s as u64 * seg).max(start);
        let s1 = ((s as u64 + 1) * seg).min(end);
        let (piece, tail) = rest.split_at_mut((s1 - s0) as usize);
        pieces.push((s, (s0 - s as u64 * seg) as usize, piece));
        rest = tail;
    }
    let one = |(s, skip, piece): (usize, usize, &mut [u16])| -> Result<()> {
        let seg_len = (t.num_elements - s as u64 * seg).min(seg) as usize;
        if skip == 0 && piece.len() == seg_len {
            return decode_range(&p, t, s, piece, &[], want, &mut Sums::default()).map(|_| ());
        }
        let mut whole = vec![0u16; seg_len];
        decode_range(&p, t, s, &mut whole, &[], Want { stream_out: false, ..want }, &mut Sums::default())?;
        piece.copy_from_slice(&whole[skip..skip + piece.len()]);
        Ok(())
    };
    if opts.parallel && pieces.len() > 1 {
        pieces.into_par_iter().try_for_each(one)
    } else {
        pieces.into_iter().try_for_each(one)
    }
}

/// Allocating form of [`decode_into`].
pub fn decode(t: &CompressedTensor, opts: &DecodeOptions) -> Result<Vec<u16>> {
    // Validate before allocating: N is then backed by N sign+mantissa bytes.
    t.validate()?;
    let mut out = vec![0u16; t.num_elements as usize];
    crate::hint::huge_pages(&mut out);
    decode_into(t, &mut out, opts)?;
    Ok(out)
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
    only_symbol: u16,
    seg_elems: usize,
    /// Whether the output is large enough to be written around the caches.
    stream_out: bool,
    /// Lanes layout: the multi-symbol table and the stream bytes.
    lanes: Option<LanesCode<'a, u8>>,
    /// Lanes9 layout: the same for its 9-bit symbols.
    lanes9: Option<LanesCode<'a, u16>>,
}

/// A lanes or lanes9 tensor's multi-symbol table and stream bytes.
type LanesCode<'a, S> = (Box<MultiTable<S>>, Cow<'a, [u8]>);

thread_local! {
    /// Each thread's lane buffers for the lanes layout, allocated once.
    static LANE_BUFS: RefCell<Option<LaneBufs<u8>>> = const { RefCell::new(None) };
    /// The same for the lanes9 layout.
    static LANE_BUFS9: RefCell<Option<LaneBufs<u16>>> = const { RefCell::new(None) };
}

/// Checks everything the decoders rely on and builds the table.
fn prepare<'a>(t: &TensorView<'a>, out_len: usize) -> Result<Prepared<'a>> {
    // O(segments): offsets, sizes and the code's completeness. After this every
    // slice taken below is in bounds and every table entry is meaningful.
    t.validate()?;
    if t.num_elements != out_len as u64 {
        return Err(Error::OutputLength { expected: t.num_elements, actual: out_len as u64 });
    }
    let mut table = Box::new([0 as Entry; TABLE_SIZE]);
    let invalid = |e| Error::Invalid { field: "code_lengths", reason: format!("{e:?}") };
    let mut lanes9 = None;
    if t.layout == Layout::Lanes9 {
        table::build9(&t.code_lengths, t.only_symbol, &mut table).map_err(invalid)?;
        lanes9 = (t.max_len > 0).then(|| (MultiTable::new9(&table), stream_bytes(&t.words)));
    } else {
        // Valid, so the symbol is below 256.
        table::build(t.lengths8(), t.only_symbol as u8, &mut table).map_err(invalid)?;
    }
    let lanes = (t.layout == Layout::Lanes && t.max_len > 0).then(|| (MultiTable::new(&table), stream_bytes(&t.words)));
    Ok(Prepared {
        table,
        max_len: t.max_len as u32,
        only_symbol: t.only_symbol,
        seg_elems: t.segment_elems() as usize,
        // The lanes decoder writes outputs beyond the caches around them (it
        // checksums what it joins before storing it, so nothing is read back).
        stream_out: t.num_elements.saturating_mul(2) >= STREAM_OUT_BYTES,
        lanes,
        lanes9,
    })
}

/// The lanes layout's stream bytes in stream order (the words' little-endian
/// bytes), at least 8 of them: a view of borrowed words where possible (for
/// as long as they are borrowed), else a padded copy.
fn stream_bytes<'a>(words: &Cow<'a, [u32]>) -> Cow<'a, [u8]> {
    if let Cow::Borrowed(w) = words
        && cfg!(target_endian = "little")
        && w.len() >= 2
    {
        return Cow::Borrowed(bytemuck::cast_slice(w));
    }
    let mut v: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    v.resize(v.len().max(8), 0);
    Cow::Owned(v)
}

/// Decodes consecutive segments starting at `first_seg` into `out` (their
/// whole output, the last one possibly short), continuing `sums` with them
/// as `want` says.
///
/// With `expect` (empty, or as long as `out`) it compares instead, and
/// returns whether any element differs: the lanes joins compare full rows
/// from their registers and leave that part of `out` as it was, so `out`
/// is then scratch.
fn decode_range(
    p: &Prepared,
    t: &TensorView,
    first_seg: usize,
    out: &mut [u16],
    expect: &[u16],
    want: Want,
    sums: &mut Sums,
) -> Result<bool> {
    assert!(expect.is_empty() || expect.len() == out.len(), "an expected element for each decoded one");
    let per = t.layout.streams_per_segment() as usize;
    let mut differs = false;
    for (i, seg_out) in out.chunks_mut(p.seg_elems).enumerate() {
        let s = first_seg + i;
        let base = s * p.seg_elems;
        let raw = |e: usize| t.layout.raw_len(e as u64) as usize;
        let sm = &t.sign_mantissa[raw(base)..raw(base + seg_out.len())];
        let expect = if expect.is_empty() { expect } else { &expect[i * p.seg_elems..][..seg_out.len()] };
        // The lanes decoders continue the data CRC and compare as they join.
        let mut lanes_join = |decode: &mut dyn FnMut(&mut join::Output<'_>) -> bool| {
            let crc = want.data.then_some(sums.data);
            let mut how = join::Output { stream_out: want.stream_out, crc, expect, differs: false };
            let ok = decode(&mut how);
            sums.data = how.crc.unwrap_or(0);
            differs |= how.differs;
            ok
        };
        let starts = || &t.stream_offsets[LANES * s..LANES * (s + 1) + 1];
        let (ok, joined) = if p.max_len == 0 {
            // The tensor has no words at all (validated).
            if t.layout == Layout::Lanes9 {
                join_const9(p.only_symbol, sm, seg_out);
            } else {
                join_const(p.only_symbol as u8, sm, seg_out);
            }
            (true, false)
        } else if let Some((multi, bytes)) = &p.lanes9 {
            let ok = lanes_join(&mut |how| {
                LANE_BUFS9.with_borrow_mut(|bufs| {
                    let bufs = bufs.get_or_insert_with(LaneBufs::new);
                    lanes::decode_segment(multi, &Stream::new(bytes), starts(), sm, seg_out, bufs, how)
                })
            });
            (ok, true)
        } else if let Some((multi, bytes)) = &p.lanes {
            let ok = lanes_join(&mut |how| {
                LANE_BUFS.with_borrow_mut(|bufs| {
                    let bufs = bufs.get_or_insert_with(LaneBufs::new);
                    lanes::decode_segment(multi, &Stream::new(bytes), starts(), sm, seg_out, bufs, how)
                })
            });
            (ok, true)
        } else {
            let words = &t.words[t.stream_offsets[s] as usize..t.stream_offsets[s + 1] as usize];
            (warp::decode_segment(&p.table, p.max_len, words, sm, seg_out), false)
        };
        if !expect.is_empty() && !joined {
            differs |= seg_out != expect;
        }
        if !ok {
            return Err(Error::CorruptStream { segment: s as u64 });
        }
        if want.record {
            // After the decode, which has just read the segment's words and
            // bytes into the cache. A segment's words are consecutive, and
            // follow the previous one's.
            let words = &t.words[t.stream_offsets[per * s] as usize..t.stream_offsets[per * (s + 1)] as usize];
            let bytes: &[u8] = bytemuck::cast_slice(words);
            sums.words = crc32c::crc32c_append(sums.words, bytes);
            sums.word_bytes += bytes.len() as u64;
            sums.sm = crc32c::crc32c_append(sums.sm, sm);
            sums.sm_bytes += sm.len() as u64;
        }
        // Segments not joined by a lanes decoder are checksummed here, while
        // still in cache.
        if want.data && !joined {
            sums.data = data_crc_append(sums.data, seg_out);
        }
    }
    Ok(differs)
}

/// A lanes9 tensor with a single 9-bit symbol: every element has it, and
/// its raw bits from `raw` (a segment's, starting on a whole group).
fn join_const9(symbol: u16, raw: &[u8], out: &mut [u16]) {
    let (groups, tail) = out.as_chunks_mut::<LANE_RUN>();
    let (whole, rest) = raw.split_at(groups.len() * RAW9_GROUP_BYTES);
    for (o, g) in groups.iter_mut().zip(whole.as_chunks::<RAW9_GROUP_BYTES>().0) {
        for (o, v) in o.iter_mut().zip(df11_gpu::bits::unpack_raw9(*g)) {
            *o = df11_gpu::bits::join9(symbol, v);
        }
    }
    for (o, &b) in tail.iter_mut().zip(rest) {
        *o = df11_gpu::bits::join9(symbol, b & 0x7f);
    }
}

/// A tensor with a single exponent: every element has it.
fn join_const(e: u8, sm: &[u8], out: &mut [u16]) {
    for (o, &s) in out.iter_mut().zip(sm) {
        *o = df11_gpu::bits::join(e, s);
    }
}
