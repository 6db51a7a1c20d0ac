//! A [`Group`] laid out as the decode kernel reads it (see
//! `df11_gpu::decode::GroupInput`), after checking every count, offset and
//! length the kernel relies on.
//!
//! The GPU launcher uploads these buffers; the emulated kernel in the tests
//! reads the very same ones, so the layout code is tested with the kernel.

use crate::container::{CompressedTensor, Group, Layout};
use crate::error::{Error, Result};
use df11_gpu::decode::{GroupInput, TensorDesc};
use df11_gpu::format::{DESC_WORDS, LANE_RUN, MULTI_TABLE_WORDS, TABLE_SIZE};
use df11_gpu::table;

/// Host copies of a group's device buffers.
#[derive(Clone, Debug, Default)]
pub struct GroupLayout {
    /// [`DESC_WORDS`] words per tensor.
    pub descs: Vec<u64>,
    /// Every tensor's code words, back to back.
    pub words: Vec<u32>,
    /// Every tensor's segment offsets, back to back.
    pub offsets: Vec<u32>,
    /// Sign+mantissa bytes (lanes9: the raw bytes) packed little-endian,
    /// each tensor padded to 8 bytes.
    pub sign_mantissa: Vec<u64>,
    /// One decode table per tensor: `TABLE_WORDS` words for the warp
    /// layout, a multi-symbol table of [`MULTI_TABLE_WORDS`] for the lanes and lanes9 layouts.
    pub tables: Vec<u32>,
    /// The lane index of [`GroupLayout::slice`] (empty without one).
    pub lane_index: Vec<u32>,
    /// Elements of the decoded group (the output length).
    pub total_elements: u64,
    /// Segments over all tensors.
    pub total_segments: u64,
    /// Bytes of compressed payload the decoder reads: code words plus the
    /// raw bytes (one sign+mantissa byte per element; lanes9: 7 per 8).
    pub payload_bytes: u64,
}

impl GroupLayout {
    /// Validates `group` and lays it out. Any inconsistency is an error here,
    /// so the kernel's bounds checks never fire on a layout built by this.
    pub fn new(group: &Group) -> Result<Self> {
        let mut l = GroupLayout::default();
        for (i, t) in group.tensors.iter().enumerate() {
            let table = check_tensor(t)?;
            let num_segments = t.num_segments() as usize;
            let desc = TensorDesc {
                num_elements: t.num_elements,
                out_offset: l.total_elements,
                word_base: l.words.len() as u64,
                sm_base: l.sign_mantissa.len() as u64,
                offset_base: l.offsets.len() as u64,
                table_base: l.tables.len() as u64,
                segment_rows: t.segment_rows,
                // 2^40 elements at R = 1 would be 2^32 segments.
                num_segments: u32::try_from(num_segments)
                    .map_err(|_| Error::invalid("stream_offsets", format!("tensor {i}: too many segments")))?,
                max_len: u32::from(t.max_len),
                layout: t.layout.code(),
                first_segment: u32::try_from(l.total_segments).unwrap_or(u32::MAX),
                slice_rows: 0,
                index_base: 0,
            };
            l.descs.extend_from_slice(&desc.to_words());
            l.words.extend_from_slice(&t.words);
            l.offsets.extend_from_slice(&t.stream_offsets);
            l.sign_mantissa.extend(t.sign_mantissa.chunks(LANE_RUN).map(|c| {
                let mut b = [0u8; LANE_RUN];
                b[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(b)
            }));
            match t.layout {
                Layout::Warp => {
                    l.tables.extend(table.chunks_exact(2).map(|p| u32::from(p[0]) | u32::from(p[1]) << 16));
                }
                Layout::Lanes | Layout::Lanes9 => {
                    let mut multi = [0u32; MULTI_TABLE_WORDS];
                    if t.layout == Layout::Lanes9 {
                        table::build_multi9(&table, &mut multi);
                    } else {
                        table::build_multi(&table, &mut multi);
                    }
                    l.tables.extend_from_slice(&multi);
                }
            }
            l.total_elements =
                l.total_elements.checked_add(t.num_elements).filter(|&n| usize::try_from(n).is_ok()).ok_or_else(
                    || Error::invalid("num_elements", "the group does not fit this machine's address space"),
                )?;
            l.total_segments += num_segments as u64;
            l.payload_bytes += 4 * t.words.len() as u64 + t.sign_mantissa.len() as u64;
        }
        debug_assert_eq!(l.descs.len(), group.tensors.len() * DESC_WORDS);
        Ok(l)
    }

    /// Number of tensors.
    pub fn num_tensors(&self) -> usize {
        self.descs.len() / DESC_WORDS
    }

    /// Work items of the kernel for `layout` (a `LAYOUT_*` code) at `warps`
    /// warps per block: its tensors' units (segments, or their slices with a
    /// lane index), a block's warps at a time, as the kernel's block loop
    /// counts them. Zero: that kernel has no work.
    pub fn items(&self, layout: u8, warps: u32) -> u64 {
        (0..self.num_tensors())
            .map(|i| TensorDesc::read(&self.descs, i))
            .filter(|d| d.layout == layout)
            .map(|d| d.units().div_ceil(u64::from(warps.max(1))))
            .sum()
    }

    /// The buffers as the kernel logic takes them.
    pub fn input(&self) -> GroupInput<'_> {
        GroupInput {
            descs: &self.descs,
            words: &self.words,
            offsets: &self.offsets,
            sign_mantissa: &self.sign_mantissa,
            tables: &self.tables,
            lane_index: &self.lane_index,
        }
    }
}

/// Validates the tensor (`docs/FORMAT.md` §4–5) and returns its decode table.
fn check_tensor(t: &CompressedTensor) -> Result<[u16; TABLE_SIZE]> {
    t.validate()?;
    let mut table = [0u16; TABLE_SIZE];
    let built = if t.layout == Layout::Lanes9 {
        table::build9(&t.code_lengths, t.only_symbol, &mut table)
    } else {
        // Valid, so the symbol is below 256.
        table::build(t.lengths8(), t.only_symbol as u8, &mut table)
    };
    match built {
        Ok(m) if m == u32::from(t.max_len) => Ok(table),
        // `validate` has checked both; this is a second line of defence for the kernel.
        _ => Err(Error::invalid("code_lengths", "do not form the code max_len describes")),
    }
}
