//! The lane index: where each lane's stream stands every few rows, so that
//! several warps can decode one segment of a lanes tensor.
//!
//! One warp decodes one segment, and a segment of R = 1024 rows takes a warp
//! about a thousand dependent lookups whatever else the GPU does: a tensor
//! of a few million weights has too few segments to fill the GPU, and the
//! decode is latency-bound (PERFORMANCE.md §3). Shorter segments would fix
//! that at a ratio cost paid in every file. The index instead is built when
//! a group is loaded, kept only in device memory (4 bytes per lane and slice:
//! at 64-row slices, 1/16 bit per weight), and cuts each segment into slices
//! of `slice_rows` rows, one warp each.
//!
//! An entry is the bit where a lane's slice starts, counted from the lane's
//! first word. Two walks of the codes find it. The launcher runs the index
//! kernel (`df11_gpu::decode::index_group_lanes`: the decode kernels'
//! lookups, without the join or the stores) on the device, one warp per
//! segment, after [`GroupLayout::plan_slices`] has cut the descriptors.
//! [`GroupLayout::slice`] walks on the CPU instead, with the same
//! multi-symbol table: a lookup takes every whole code in its 12-bit window,
//! and the meta word's nibbles give the bits up to any of them. That is the
//! emulator's and the tests' oracle. On a sound stream both give exactly
//! where the kernel, decoding the segment whole, is at that row.
//!
//! Why a wrong entry can hide nothing: the kernel checks that each slice ends
//! exactly at the next slice's entry, and that the last ends as a segment
//! must (FORMAT.md §8). Decoding is a function of the start bit, so if all
//! those checks pass, the slices chained from bit 0 *are* the whole-segment
//! decode, and its end check passed. A segment the unsliced kernel would flag
//! is therefore flagged whatever the index holds, and on sound segments the
//! entries are exact, so nothing else is: the index changes no output of a
//! sound group and no error report (`gpu::tests` checks both against the
//! reference decoder).

use super::layout::GroupLayout;
use df11_gpu::decode::TensorDesc;
use df11_gpu::format::{
    DESC_WORDS, LANE_RUN, LANES, LAYOUT_LANES, LAYOUT_LANES9, MAX_SEGMENT_ROWS, MULTI_TABLE_WORDS, ROW_ELEMS,
    TABLE_BITS, TABLE_SIZE,
};
use df11_gpu::table::{MULTI_MAX, multi_bits, multi_count};
use rayon::prelude::*;

/// Slices are never shorter than this when the launcher picks them: below
/// it the index grows past 1/16 bit per weight and a slice's setup (its
/// first loads) is no longer small against its rows.
pub const MIN_SLICE_ROWS: u32 = 64;

/// How a group's lanes segments are split among warps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Slicing {
    /// No index: one warp per segment.
    #[default]
    Off,
    /// Slices of this many rows (at least 1) in every lanes tensor whose
    /// segments are longer.
    Rows(u32),
    /// The longest power-of-two slices, down to [`MIN_SLICE_ROWS`], that make
    /// at least this many units of work (warps) over the group; no index if
    /// whole segments already do.
    Fill(u64),
}

/// Units of work of the lanes tensors `descs` with slices of `k` rows.
fn units(descs: &[TensorDesc], k: u32) -> u64 {
    descs.iter().map(|d| u64::from(d.num_segments) * u64::from(d.segment_rows.div_ceil(k))).sum()
}

/// The slice length `slicing` asks for on `descs` (lanes tensors), or `None`.
fn slice_rows(descs: &[TensorDesc], slicing: Slicing) -> Option<u32> {
    match slicing {
        Slicing::Off => None,
        Slicing::Rows(k) => Some(k.max(1)),
        Slicing::Fill(target) => {
            let whole: u64 = descs.iter().map(|d| u64::from(d.num_segments)).sum();
            if whole >= target {
                return None;
            }
            let mut k = MAX_SEGMENT_ROWS;
            while k > MIN_SLICE_ROWS && units(descs, k) < target {
                k /= 2;
            }
            Some(k)
        }
    }
}

impl GroupLayout {
    /// Adds a lane index to the layout's lanes and lanes9 tensors as
    /// `slicing` asks (none for `Slicing::Off`, or where a tensor's segments
    /// are no longer than the slices), its entries walked on the CPU.
    /// Replaces an earlier index. Returns the slice length chosen.
    pub fn slice(&mut self, slicing: Slicing) -> Option<u32> {
        let k = self.plan_slices(slicing)?;
        for d in self.sliced() {
            let entries = walk(self, &d);
            self.lane_index[d.index_base as usize..][..entries.len()].copy_from_slice(&entries);
        }
        Some(k)
    }

    /// [`GroupLayout::slice`] without the walk: the descriptors cut into
    /// slices and the index sized, all zeros, for the GPU's index kernel
    /// (`df11_gpu::decode::index_group_lanes`) to fill.
    pub fn plan_slices(&mut self, slicing: Slicing) -> Option<u32> {
        self.lane_index.clear();
        let mut lanes = Vec::new();
        for i in 0..self.num_tensors() {
            let mut d = TensorDesc::read(&self.descs, i);
            (d.slice_rows, d.index_base) = (0, 0);
            self.descs[i * DESC_WORDS..][..DESC_WORDS].copy_from_slice(&d.to_words());
            if matches!(d.layout, LAYOUT_LANES | LAYOUT_LANES9) && d.num_segments > 0 {
                lanes.push((i, d));
            }
        }
        let descs: Vec<TensorDesc> = lanes.iter().map(|&(_, d)| d).collect();
        let k = slice_rows(&descs, slicing)?;
        for (i, mut d) in lanes.into_iter().filter(|(_, d)| d.segment_rows > k) {
            d.slice_rows = k;
            d.index_base = self.lane_index.len() as u64;
            self.lane_index.resize(self.lane_index.len() + d.units() as usize * LANES, 0);
            self.descs[i * DESC_WORDS..][..DESC_WORDS].copy_from_slice(&d.to_words());
        }
        (!self.lane_index.is_empty()).then_some(k)
    }

    /// The descriptors of the tensors the index covers.
    pub fn sliced(&self) -> Vec<TensorDesc> {
        (0..self.num_tensors()).map(|i| TensorDesc::read(&self.descs, i)).filter(|d| d.slice_rows > 0).collect()
    }
}

/// The index entries of tensor `d` (its `slice_rows` set): for each segment,
/// slice and lane, the lane's stream bit at the slice's first row.
fn walk(l: &GroupLayout, d: &TensorDesc) -> Vec<u32> {
    let slices = d.slices() as usize;
    // As the kernel reads them: the group's words from the tensor's on.
    let words = stream_bytes(&l.words[d.word_base as usize..]);
    // The meta words alone (16 KiB, where the whole table takes 32): the
    // walk reads nothing else, and they stay in the L1 cache.
    let table = &l.tables[d.table_base as usize..][..MULTI_TABLE_WORDS];
    let metas: Box<[u32; TABLE_SIZE]> = Box::new(std::array::from_fn(|i| table[2 * i + 1]));
    let offsets = &l.offsets[d.offset_base as usize..];
    let mut index = vec![0u32; d.num_segments as usize * slices * LANES];
    let per_slice = d.slice_rows * LANE_RUN as u32;
    index.par_chunks_mut(slices * LANES).enumerate().for_each(|(seg, entries)| {
        // Every row before the segment's last slice is full: a lane's slice
        // `j` starts at its symbol `j · per_slice`.
        let seg_slices = d.segment_len(seg as u64).div_ceil(ROW_ELEMS as u32).div_ceil(d.slice_rows);
        let last_start = seg_slices.saturating_sub(1) * per_slice;
        // Four lanes at a time, one lookup each a round: their chains are
        // independent, so the CPU overlaps them, and their state stays in
        // registers. A lookup takes all the codes of its entry; one that
        // reaches a slice's first symbol also gives the bits up to it
        // (nibble `k` of the meta word: the bits of the first `k` codes).
        for four in 0..LANES / 4 {
            let lanes: [usize; 4] = std::array::from_fn(|i| 4 * four + i);
            let start = lanes.map(|j| u64::from(offsets[seg * LANES + j]) * 32);
            let mut at = [0u32; 4];
            let mut have = [0u32; 4];
            let mut next = [per_slice; 4];
            while have.iter().any(|&h| h < last_start) {
                for i in 0..4 {
                    let meta = metas[window(&words, start[i] + u64::from(at[i]))];
                    // At least one code a lookup in a table the host built.
                    let count = multi_count(meta).clamp(1, MULTI_MAX);
                    if have[i] + count >= next[i] && next[i] <= last_start {
                        let slice = (next[i] / per_slice) as usize;
                        entries[slice * LANES + lanes[i]] = at[i] + multi_bits(meta, next[i] - have[i]);
                        next[i] += per_slice;
                    }
                    at[i] = at[i].wrapping_add(multi_bits(meta, count));
                    have[i] += count;
                }
            }
        }
    });
    index
}

/// The stream bytes of `words` in stream order (each word's little-endian
/// bytes): a view on little-endian machines, else a copy.
fn stream_bytes(words: &[u32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(words))
    } else {
        std::borrow::Cow::Owned(words.iter().flat_map(|w| w.to_le_bytes()).collect())
    }
}

/// The 12 stream bits from bit `bit` of `bytes` (MSB-first, zeros past the
/// end): a lookup's table index.
#[inline(always)]
fn window(bytes: &[u8], bit: u64) -> usize {
    let at = (bit / 8) as usize;
    let x = match bytes.get(at..at.saturating_add(8)) {
        Some(b) => u64::from_be_bytes(b.try_into().expect("8 bytes")),
        // The last 7 bytes and past the end: zeros after the stream.
        None => {
            let mut b = [0u8; 8];
            let tail = bytes.get(at..).unwrap_or(&[]);
            b[..tail.len()].copy_from_slice(tail);
            u64::from_be_bytes(b)
        }
    };
    ((x << (bit % 8)) >> (64 - TABLE_BITS)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{Group, Layout};
    use crate::encode::{EncodeOptions, compress_exact};
    use df11_gpu::bits::{exponent, symbol9};

    /// Weights-like bits: exponents spread over a few values, so codes
    /// differ in length (a wrong count of bits shows).
    fn bits(n: usize, seed: u64) -> Vec<u16> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let e = 120 - (x >> 20).trailing_zeros().min(9) as u16;
                (x as u16 & 0x807f) | e << 7
            })
            .collect()
    }

    /// Every entry is the sum of the code lengths of the lane's symbols
    /// before its slice, counted from the original bits as FORMAT.md §8
    /// places them (row `r`, lane `j`: elements `256 r + 8 j ..`).
    #[test]
    fn entries_are_the_bits_before_each_slice() {
        for layout in [Layout::Lanes, Layout::Lanes9] {
            for (n, rows, k) in [
                (5000, 7, 2),
                (5000, 7, 3),
                (70_001, 16, 1),
                (70_001, 16, 5),
                (256 * 33 + 5, 32, 8),
                (256 * 33, 32, 32),
            ] {
                let b = bits(n, n as u64 ^ u64::from(k));
                let t = compress_exact(&b, &EncodeOptions { segment_rows: rows, layout });
                let len = |e: u16| {
                    u32::from(match layout {
                        Layout::Lanes9 => t.code_lengths[symbol9(e) as usize],
                        _ => t.code_lengths[exponent(e) as usize],
                    })
                };
                let mut l = GroupLayout::new(&Group { tensors: vec![t.clone()] }).expect("valid");
                assert_eq!(l.slice(Slicing::Rows(k)), (rows > k).then_some(k));
                let d = TensorDesc::read(&l.descs, 0);
                let slices = rows.div_ceil(k) as usize;
                if rows <= k {
                    assert!(l.lane_index.is_empty());
                    continue;
                }
                assert_eq!(l.lane_index.len(), t.num_segments() as usize * slices * LANES);
                let seg_elems = rows as usize * ROW_ELEMS;
                for seg in 0..t.num_segments() as usize {
                    let seg_rows = d.segment_len(seg as u64).div_ceil(ROW_ELEMS as u32) as usize;
                    for lane in 0..LANES {
                        let mut bits_before = 0;
                        for row in 0..seg_rows {
                            if row % k as usize == 0 {
                                let e = l.lane_index[(seg * slices + row / k as usize) * LANES + lane];
                                assert_eq!(
                                    e, bits_before,
                                    "{layout:?} n {n} R {rows} k {k} seg {seg} lane {lane} row {row}"
                                );
                            }
                            let first = seg * seg_elems + row * ROW_ELEMS + lane * LANE_RUN;
                            bits_before +=
                                b[first.min(n)..(first + LANE_RUN).min(n)].iter().map(|&e| len(e)).sum::<u32>();
                        }
                    }
                }
            }
        }
    }

    /// `Fill` picks the longest power-of-two slices that reach the target,
    /// never shorter than `MIN_SLICE_ROWS`, and none when segments suffice;
    /// warp tensors and tensors with short segments get no index.
    #[test]
    fn fill_picks_the_longest_slices_that_reach_the_target() {
        let lanes = |rows| {
            compress_exact(&bits(4 * 1024 * 256, 3), &EncodeOptions { segment_rows: rows, layout: Layout::Lanes })
        };
        let warp = compress_exact(&bits(3000, 4), &EncodeOptions { segment_rows: 1024, layout: Layout::Warp });
        // 4 segments of 1024 rows, a warp tensor, and 16 segments of 64 rows.
        let group = Group { tensors: vec![lanes(1024), warp, lanes(64)] };
        let units = |l: &GroupLayout| -> Vec<u64> {
            (0..l.num_tensors()).map(|i| TensorDesc::read(&l.descs, i).units()).collect()
        };
        let base = GroupLayout::new(&group).expect("valid");
        assert_eq!(units(&base), [4, 1, 64]);
        for (target, want, want_units) in [
            (68, None, vec![4, 1, 64]),
            (69, Some(512), vec![8, 1, 64]),
            (64 + 4 * 16, Some(64), vec![64, 1, 64]),
            (1 << 20, Some(MIN_SLICE_ROWS), vec![64, 1, 64]),
        ] {
            let mut l = base.clone();
            assert_eq!(l.slice(Slicing::Fill(target)), want, "target {target}");
            assert_eq!(units(&l), want_units, "target {target}");
            let d = TensorDesc::read(&l.descs, 1);
            assert_eq!((d.slice_rows, d.index_base), (0, 0), "the warp tensor is left alone");
        }
        let mut l = base.clone();
        assert_eq!(l.slice(Slicing::Off), None);
        assert!(l.lane_index.is_empty());
        assert_eq!(l.descs, base.descs);
    }
}
