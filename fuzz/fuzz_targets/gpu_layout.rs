//! The GPU launcher's host-side validation (`GroupLayout::new`) on arbitrary
//! groups: parsed from the input and then, because a `Group`'s fields are
//! public, optionally tweaked in ways the parser would never produce.
//!
//! An accepted layout must describe only reads and writes inside its own
//! buffers. Tiny accepted groups are also decoded by the kernel logic on the
//! block emulator, which must agree with the reference decoder: the same bits,
//! or an error where the reference finds a corrupt stream.
//!
//! The same layouts are also cut into slices by a lane index
//! (`GroupLayout::slice`), which must keep them in bounds and change nothing
//! the emulated kernel decodes or reports, whether the CPU walked the index
//! or the emulated index kernel wrote it (on sound groups the two agree).
//!
//! Input: byte 0 picks the launch shape, the slicing and the index
//! builder, byte 1 the tweak, bytes 2..6 its value, byte 6 which
//! tensor/entry it hits; the rest is a container (its CRCs are fixed up
//! before parsing).
#![no_main]

use df11_fuzz::{fix_crcs, reference_bits};
use df11_gpu::decode::TensorDesc;
use df11_gpu::format::{
    LANE_RUN, LANES, LAYOUT_LANES, LAYOUT_LANES9, MAX_CODE_LEN, MAX_SEGMENT_ROWS, MULTI_TABLE_WORDS, ROW_ELEMS, TABLE_WORDS,
};
use df11_host::gpu::{GroupLayout, Slicing, decode_emulated_layout, index_emulated};
use df11_host::{Error, Group};
use libfuzzer_sys::fuzz_target;

/// Breaks one field of one tensor; the validation must notice or the layout
/// must still be in bounds.
fn tweak(g: &mut Group, kind: u8, value: u32, index: u8) {
    let Some(t) = (!g.tensors.is_empty()).then(|| index as usize % g.tensors.len()).map(|i| &mut g.tensors[i]) else {
        return;
    };
    let i = usize::from(index);
    match kind % 12 {
        0 => {}
        1 => {
            let len = t.stream_offsets.len();
            if let Some(o) = t.stream_offsets.get_mut(i % len.max(1)) {
                *o = value;
            }
        }
        2 => t.stream_offsets.push(value),
        3 => {
            t.stream_offsets.pop();
        }
        4 => t.words.truncate(value as usize),
        5 => t.words.push(value),
        6 => t.num_elements = u64::from(value) | u64::from(index) << 32,
        7 => {
            t.sign_mantissa.pop();
        }
        8 => t.segment_rows = value,
        9 => t.max_len = value as u8,
        10 => t.code_lengths[i] = value as u8,
        _ => t.only_symbol = value as u16,
    }
}

/// Every index the kernel derives from `layout` stays inside its buffers.
fn check_bounds(l: &GroupLayout, num_tensors: usize) {
    assert_eq!(l.num_tensors(), num_tensors);
    let mut out_end = 0u64;
    let mut table_end = 0usize;
    let mut segments = 0u64;
    for i in 0..num_tensors {
        let d = TensorDesc::read(&l.descs, i);
        let n = d.num_elements;
        assert!((1..=MAX_SEGMENT_ROWS).contains(&d.segment_rows));
        assert!(d.max_len <= MAX_CODE_LEN);
        let seg_elems = u64::from(d.segment_rows) * ROW_ELEMS as u64;
        let s = u64::from(d.num_segments);
        assert_eq!(s, n.div_ceil(seg_elems), "segments cover the elements exactly");
        assert_eq!(d.out_offset, out_end, "tensors are back to back in the output");
        out_end += n;
        assert!(d.out_offset + n <= l.total_elements, "writes stay in the output");
        // One offset per segment (warp) or per lane (lanes, lanes9), and
        // each kernel's own table.
        let nine = d.layout == LAYOUT_LANES9;
        let lanes = d.layout == LAYOUT_LANES || nine;
        let k = s as usize * if lanes { LANES } else { 1 };
        let table_words = if lanes { MULTI_TABLE_WORDS } else { TABLE_WORDS };
        let ob = d.offset_base as usize;
        assert!(ob + k < l.offsets.len(), "offsets in bounds");
        let offs = &l.offsets[ob..=ob + k];
        assert!(offs.windows(2).all(|w| w[0] <= w[1]), "offsets non-decreasing");
        assert!(d.word_base + u64::from(offs[k]) <= l.words.len() as u64, "words in bounds");
        let raw_bytes = if nine { df11_host::format::RAW9_GROUP_BYTES as u64 * (n / 8) + n % 8 } else { n };
        assert!(d.sm_base + raw_bytes.div_ceil(LANE_RUN as u64) <= l.sign_mantissa.len() as u64, "raw bytes in bounds");
        assert_eq!(d.table_base as usize, table_end, "tables back to back");
        table_end += table_words;
        assert!(table_end <= l.tables.len(), "table in bounds");
        assert_eq!(u64::from(d.first_segment), segments);
        segments += s;
    }
    assert_eq!(out_end, l.total_elements);
    assert_eq!(table_end, l.tables.len());
    assert_eq!(segments, l.total_segments);
    // The lane index: each sliced lanes tensor's entries back to back.
    let mut index_end = 0u64;
    for i in 0..num_tensors {
        let d = TensorDesc::read(&l.descs, i);
        if d.slice_rows > 0 {
            assert!(d.layout == LAYOUT_LANES || d.layout == LAYOUT_LANES9, "only lanes tensors are sliced");
            assert!(d.slice_rows < d.segment_rows, "a slice is shorter than a segment");
            assert_eq!(d.index_base, index_end, "index entries back to back");
            index_end += d.units() * LANES as u64;
        }
    }
    assert_eq!(index_end, l.lane_index.len() as u64, "the index holds every slice");
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 7 {
        return;
    }
    let (ctrl, container) = data.split_at(7);
    let Ok(mut g) = Group::from_bytes(&fix_crcs(container)) else { return };
    tweak(&mut g, ctrl[1], u32::from_le_bytes(ctrl[2..6].try_into().unwrap()), ctrl[6]);
    let layout = match GroupLayout::new(&g) {
        Ok(l) => l,
        Err(e) => {
            assert!(matches!(e, Error::Invalid { .. }), "layout error {e:?}");
            assert!(g.validate().is_err(), "layout rejected a valid group: {e:?}");
            return;
        }
    };
    g.validate().expect("an accepted group is valid");
    check_bounds(&layout, g.tensors.len());

    // The emulator runs one OS thread per GPU thread: only tiny groups.
    if layout.total_elements > 2048 || layout.total_segments > 12 {
        return;
    }
    let grid = u32::from(ctrl[0] % 3) + 1;
    let warps = u32::from(ctrl[0] / 3 % 2) + 1;
    let slicing = [Slicing::Off, Slicing::Rows(1), Slicing::Rows(2), Slicing::Fill(64)][usize::from(ctrl[0] / 6 % 4)];
    let mut sliced = layout.clone();
    sliced.slice(slicing);
    check_bounds(&sliced, g.tensors.len());
    let reference: Vec<_> = g.tensors.iter().map(reference_bits).collect();
    // The index as the CPU walks it, or as the index kernel writes it.
    let mut planned = layout.clone();
    planned.plan_slices(slicing);
    let entries = index_emulated(&planned, grid, warps);
    planned.lane_index = entries.into_iter().map(|e| e.expect("every index entry written")).collect();
    assert_eq!(planned.descs, sliced.descs);
    if reference.iter().all(Result::is_ok) {
        assert!(planned.lane_index == sliced.lane_index, "index kernel and CPU walk disagree on a sound group");
    }
    let chosen = if ctrl[0] / 24 % 2 == 0 { &sliced } else { &planned };
    let (out, report) = decode_emulated_layout(chosen, grid, warps);
    if reference.iter().all(Result::is_ok) {
        report.expect("kernel reports an error on a stream the reference decodes");
        let expected: Vec<u16> = reference.into_iter().flat_map(Result::unwrap).collect();
        let got: Vec<u16> = out.into_iter().map(|v| v.expect("every element written")).collect();
        assert!(got == expected, "emulated kernel differs from the reference");
    } else {
        assert!(
            matches!(report, Err(Error::CorruptStream { .. })),
            "reference finds a corrupt stream, kernel reports {report:?}"
        );
    }
});
