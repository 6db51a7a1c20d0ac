//! Decoding on an NVIDIA GPU with the kernel from `df11-gpu`.
//!
//! The parts that need no GPU are always built: [`GroupLayout`] (a group
//! validated and flattened into the kernel's input buffers) and [`Geometry`]
//! (the launch shape). With the `cuda` feature, the launcher:
//!
//! * `GpuDecoder` loads the PTX module on one device and picks the launch
//!   geometry from the device's properties.
//! * `DeviceGroup` is a [`Group`](crate::Group) validated and uploaded once;
//!   it stays on the device and can be decoded any number of times.
//! * `GpuDecoder::decode_into` launches one kernel that decodes the whole
//!   group into a caller-owned device buffer, allocating nothing.
//!
//! The driver is loaded at run time: on a machine without one,
//! `GpuDecoder::with_ptx` returns an error instead of failing to link or
//! panicking.
//!
//! With the `emulator` feature (and in this crate's tests), `decode_emulated`
//! runs the kernel's own code on the CPU block emulator (`crate::emu`).

#[cfg(feature = "cuda")]
mod cuda;
pub mod index;
pub mod layout;

#[cfg(feature = "cuda")]
pub use cuda::{DeviceGroup, DeviceOutput, GpuDecoder};
pub use index::{MIN_SLICE_ROWS, Slicing};
pub use layout::GroupLayout;

#[cfg(any(feature = "cuda", feature = "emulator", test))]
use crate::error::{Error, Result};
use df11_gpu::format::LANES;

#[cfg(any(feature = "cuda", feature = "emulator", test))]
fn gpu_err(msg: impl std::fmt::Display) -> Error {
    Error::Gpu(msg.to_string())
}

/// How the decoder launches its kernel on this device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Threads per block.
    pub block_threads: u32,
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
    /// Multiprocessors on the device.
    pub sm_count: u32,
    /// Blocks that fit on one multiprocessor at once (registers, shared memory
    /// and thread limits together, as the driver's occupancy calculator says).
    pub blocks_per_sm: u32,
}

impl Geometry {
    /// Warps per block: segments a block decodes side by side.
    pub fn warps_per_block(&self) -> u32 {
        self.block_threads / LANES as u32
    }

    /// Blocks for a group of `items` block work items: never more than fit on
    /// the device at once. The kernel's grid-stride loop hands later items to
    /// blocks that finish early, so a second wave of blocks would only add
    /// launch latency and table loads.
    pub fn grid_for(&self, items: u64) -> u32 {
        let resident = u64::from(self.sm_count) * u64::from(self.blocks_per_sm.max(1));
        items.min(resident).min(i32::MAX as u64) as u32
    }
}

/// The kernel's `ErrorReport` before a launch: no flags, no bad segment.
#[cfg(any(feature = "cuda", feature = "emulator", test))]
const ERROR_CLEAR: [u32; 2] = [0, u32::MAX];

/// Turns the kernel's error report into a result.
#[cfg(any(feature = "cuda", feature = "emulator", test))]
fn check_report(flags: u32, first_bad_segment: u32) -> Result<()> {
    if flags & df11_gpu::format::ERR_LAUNCH != 0 {
        return Err(gpu_err("the kernel rejected its launch shape"));
    }
    if flags & df11_gpu::format::ERR_WORD_COUNT != 0 {
        return Err(Error::CorruptStream { segment: u64::from(first_bad_segment) });
    }
    Ok(())
}

/// Runs the decode kernel's logic on the CPU block emulator (one OS thread per
/// GPU thread): `grid_dim` blocks of `warps` warps. Returns each output
/// element (`None` if never written) and what the kernel reported. For tests
/// and fuzzing (feature `emulator`).
#[cfg(any(feature = "emulator", test))]
pub fn decode_emulated(group: &crate::Group, grid_dim: u32, warps: u32) -> Result<(Vec<Option<u16>>, Result<()>)> {
    decode_emulated_sliced(group, Slicing::Off, grid_dim, warps)
}

/// [`decode_emulated`] with a lane index as `slicing` asks
/// ([`GroupLayout::slice`]).
#[cfg(any(feature = "emulator", test))]
pub fn decode_emulated_sliced(
    group: &crate::Group,
    slicing: Slicing,
    grid_dim: u32,
    warps: u32,
) -> Result<(Vec<Option<u16>>, Result<()>)> {
    let mut layout = GroupLayout::new(group)?;
    layout.slice(slicing);
    Ok(decode_emulated_layout(&layout, grid_dim, warps))
}

/// [`decode_emulated`] of a layout as it stands (say, with a lane index from
/// [`index_emulated`]).
#[cfg(any(feature = "emulator", test))]
pub fn decode_emulated_layout(layout: &GroupLayout, grid_dim: u32, warps: u32) -> (Vec<Option<u16>>, Result<()>) {
    use df11_gpu::format::{MULTI_TABLE_WORDS, TABLE_WORDS};
    use std::sync::atomic::AtomicU32;
    let out = crate::emu::EmuOut::new(layout.total_elements as usize);
    let report = df11_gpu::decode::ErrorReport {
        flags: AtomicU32::new(ERROR_CLEAR[0]),
        first_bad_segment: AtomicU32::new(ERROR_CLEAR[1]),
    };
    let input = layout.input();
    // One launch per layout present, as the CUDA launcher does.
    let block_dim = warps * LANES as u32;
    if layout.items(df11_gpu::format::LAYOUT_WARP, warps) > 0 {
        let launch = crate::emu::Launch { grid_dim, block_dim, shared_words: TABLE_WORDS };
        crate::emu::run(launch, |t| df11_gpu::decode::decode_group(t, &input, &out, &report));
    }
    if layout.items(df11_gpu::format::LAYOUT_LANES, warps) > 0 {
        let launch = crate::emu::Launch { grid_dim, block_dim, shared_words: MULTI_TABLE_WORDS };
        crate::emu::run(launch, |t| df11_gpu::decode::decode_group_lanes(t, &input, &out, &report));
    }
    if layout.items(df11_gpu::format::LAYOUT_LANES9, warps) > 0 {
        let launch = crate::emu::Launch { grid_dim, block_dim, shared_words: MULTI_TABLE_WORDS };
        crate::emu::run(launch, |t| df11_gpu::decode::decode_group_lanes9(t, &input, &out, &report));
    }
    let checked = check_report(report.flags.into_inner(), report.first_bad_segment.into_inner());
    (out.into_vec(), checked)
}

/// Runs the lane index kernel (`df11_gpu::decode::index_group_lanes`) on
/// the CPU block emulator for a layout [`GroupLayout::plan_slices`] cut into
/// slices: each entry as the kernel wrote it (`None` if never written). For
/// tests and fuzzing (feature `emulator`).
#[cfg(any(feature = "emulator", test))]
pub fn index_emulated(layout: &GroupLayout, grid_dim: u32, warps: u32) -> Vec<Option<u32>> {
    use std::sync::atomic::AtomicU32;
    let out = crate::emu::EmuOut::<u32>::new(layout.lane_index.len());
    let report = df11_gpu::decode::ErrorReport {
        flags: AtomicU32::new(ERROR_CLEAR[0]),
        first_bad_segment: AtomicU32::new(ERROR_CLEAR[1]),
    };
    // The kernel writes the index: it reads none.
    let input = df11_gpu::decode::GroupInput { lane_index: &[], ..layout.input() };
    let launch = crate::emu::Launch {
        grid_dim,
        block_dim: warps * LANES as u32,
        shared_words: df11_gpu::format::MULTI_TABLE_WORDS,
    };
    crate::emu::run(launch, |t| df11_gpu::decode::index_group_lanes(t, &input, &out, &report));
    out.into_vec()
}

#[cfg(test)]
mod tests;
