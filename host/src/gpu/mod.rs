//! Decoding on an NVIDIA GPU with the kernel from `df11-gpu`.
//!
//! * [`GpuDecoder`] loads the PTX module on one device and picks the launch
//!   geometry from the device's properties.
//! * [`DeviceGroup`] is a [`Group`] validated and uploaded once; it stays on
//!   the device and can be decoded any number of times.
//! * [`GpuDecoder::decode_into`] launches one kernel that decodes the whole
//!   group into a caller-owned device buffer, allocating nothing.
//!
//! The driver is loaded at run time: on a machine without one,
//! [`GpuDecoder::new`] returns an error instead of failing to link or panicking.

pub mod layout;

pub use layout::GroupLayout;

use crate::container::Group;
use crate::error::{Error, Result};
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr,
};
use cudarc::nvrtc::Ptx;
use df11_gpu::decode::{ErrorReport, KERNEL_NAME};
use df11_gpu::format::{ERR_LAUNCH, ERR_WORD_COUNT, LANES, TABLE_WORDS};
use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

fn gpu_err(msg: impl std::fmt::Display) -> Error {
    Error::Gpu(msg.to_string())
}

/// Threads per block: 8 warps, each decoding its own segment. A block shares
/// one 8 KiB table, so larger blocks spend less shared memory and fewer table
/// loads per warp; smaller ones idle fewer warps on a tensor's last, partly
/// filled item and at table switches. 256 threads also divide the thread limit
/// of every SM generation since sm_80 (2048 or 1536).
const BLOCK_THREADS: u32 = 256;

/// The decoder's shared memory: one decode table.
const SHARED_BYTES: u32 = (TABLE_WORDS * 4) as u32;

/// Dynamic shared memory a kernel may use without opting in.
const DEFAULT_MAX_DYNAMIC_SHARED: u32 = 48 * 1024;

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

/// The decode kernel, loaded on one device.
pub struct GpuDecoder {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    // Keeps the module (and so `func`) loaded.
    _module: Arc<CudaModule>,
    func: CudaFunction,
    geometry: Geometry,
    name: String,
}

/// A group resident in device memory, ready for [`GpuDecoder::decode_into`].
pub struct DeviceGroup {
    descs: CudaSlice<u64>,
    words: CudaSlice<u32>,
    offsets: CudaSlice<u32>,
    sign_mantissa: CudaSlice<u64>,
    tables: CudaSlice<u32>,
    error: CudaSlice<u32>,
    /// True element counts of the five input buffers (an empty one is
    /// allocated with one element: the driver rejects zero-byte allocations).
    lens: [usize; 5],
    total_elements: usize,
    num_tensors: usize,
    payload_bytes: u64,
    grid: u32,
}

impl DeviceGroup {
    /// Elements of the decoded group: the length `decode_into` needs.
    pub fn num_elements(&self) -> usize {
        self.total_elements
    }

    /// Number of tensors.
    pub fn num_tensors(&self) -> usize {
        self.num_tensors
    }

    /// Compressed bytes one decode reads (code words plus sign+mantissa bytes).
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Blocks one decode launches (0 for a group without elements).
    pub fn grid(&self) -> u32 {
        self.grid
    }
}

impl GpuDecoder {
    /// Loads `ptx` (normally `df11::PTX`) on device `ordinal`.
    ///
    /// Fails cleanly when there is no CUDA driver, no such device, the device
    /// is older than sm_80 or the driver rejects the module.
    pub fn new(ordinal: usize, ptx: &str) -> Result<Self> {
        // SAFETY: probing only loads and unloads the driver library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(gpu_err("no CUDA driver library found"));
        }
        let count = CudaContext::device_count().map_err(|e| gpu_err(format!("CUDA driver unusable: {e}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(gpu_err(format!("no CUDA device {ordinal} ({count} present)")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| gpu_err(format!("cannot open CUDA device {ordinal}: {e}")))?;
        let (major, minor) = ctx.compute_capability().map_err(gpu_err)?;
        let name = ctx.name().map_err(gpu_err)?;
        if major < 8 {
            return Err(gpu_err(format!("{name} is sm_{major}{minor}; the decoder needs sm_80 or newer")));
        }
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(|e| gpu_err(format!("loading the PTX: {e}")))?;
        let func = module.load_function(KERNEL_NAME).map_err(|e| gpu_err(format!("kernel {KERNEL_NAME}: {e}")))?;
        if SHARED_BYTES > DEFAULT_MAX_DYNAMIC_SHARED {
            // Only needed if the table ever grows past 48 KiB; kept so the
            // limit cannot silently bite.
            func.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                SHARED_BYTES as i32,
            )
            .map_err(gpu_err)?;
        }
        let attr = |a| ctx.attribute(a).map_err(gpu_err);
        let sm_count = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
        let max_threads_per_sm = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)? as u32;
        let smem_per_sm = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)? as u32;
        // The occupancy calculator also knows the kernel's register count; the
        // thread and shared-memory bounds are the fallback if it answers 0.
        let by_limits = (max_threads_per_sm / BLOCK_THREADS).min(smem_per_sm / SHARED_BYTES).max(1);
        let blocks_per_sm = func
            .occupancy_max_active_blocks_per_multiprocessor(BLOCK_THREADS, SHARED_BYTES as usize, None)
            .map_err(gpu_err)?;
        let blocks_per_sm = if blocks_per_sm == 0 { by_limits } else { blocks_per_sm.min(by_limits) };
        let geometry = Geometry { block_threads: BLOCK_THREADS, shared_bytes: SHARED_BYTES, sm_count, blocks_per_sm };
        let stream = ctx.default_stream();
        Ok(GpuDecoder { ctx, stream, _module: module, func, geometry, name })
    }

    /// The device's context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream [`GpuDecoder::upload`] and [`GpuDecoder::decode`] use.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// The launch geometry chosen for this device.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Validates `group` and copies it to the device.
    pub fn upload(&self, group: &Group) -> Result<DeviceGroup> {
        let layout = GroupLayout::new(group)?;
        self.upload_layout(&layout)
    }

    /// Copies a layout to the device. Private: only layouts built by
    /// `GroupLayout::new` from a group (hence validated) reach the kernel.
    fn upload_layout(&self, l: &GroupLayout) -> Result<DeviceGroup> {
        let s = &self.stream;
        fn put<T: DeviceRepr + Default>(s: &Arc<CudaStream>, v: &[T]) -> Result<CudaSlice<T>> {
            let r = if v.is_empty() { s.clone_htod(&[T::default()]) } else { s.clone_htod(v) };
            r.map_err(|e| gpu_err(format!("upload: {e}")))
        }
        let warps = u64::from(self.geometry.warps_per_block());
        let items: u64 = (0..l.num_tensors())
            .map(|i| u64::from(df11_gpu::decode::TensorDesc::read(&l.descs, i).num_segments).div_ceil(warps))
            .sum();
        Ok(DeviceGroup {
            descs: put(s, &l.descs)?,
            words: put(s, &l.words)?,
            offsets: put(s, &l.offsets)?,
            sign_mantissa: put(s, &l.sign_mantissa)?,
            tables: put(s, &l.tables)?,
            error: put(s, &ERROR_CLEAR)?,
            lens: [l.descs.len(), l.words.len(), l.offsets.len(), l.sign_mantissa.len(), l.tables.len()],
            total_elements: l.total_elements as usize,
            num_tensors: l.num_tensors(),
            payload_bytes: l.payload_bytes,
            grid: self.geometry.grid_for(items),
        })
    }

    /// Enqueues the decode of `g` into the first `g.num_elements()` elements
    /// of `out` on `stream`; returns without waiting.
    ///
    /// Allocates nothing. A corrupt stream cannot make the kernel read or
    /// write out of bounds; it sets `g`'s error report, which stays set until
    /// [`GpuDecoder::decode_checked`] resets and reads it.
    pub fn decode_into<O: DevicePtrMut<u16>>(&self, g: &DeviceGroup, out: &mut O, stream: &CudaStream) -> Result<()> {
        if out.len() < g.total_elements {
            return Err(Error::OutputLength { expected: g.total_elements as u64, actual: out.len() as u64 });
        }
        let ours = |c: &Arc<CudaContext>| Arc::ptr_eq(c, &self.ctx);
        if !ours(stream.context()) || !ours(g.descs.context()) || !ours(out.stream().context()) {
            return Err(gpu_err("the stream, group or output belongs to another device context"));
        }
        if g.grid == 0 {
            return Ok(());
        }
        let [descs_len, words_len, offsets_len, sm_len, tables_len] = g.lens;
        let out_len = g.total_elements;
        let (descs, _r0) = g.descs.device_ptr(stream);
        let (words, _r1) = g.words.device_ptr(stream);
        let (offsets, _r2) = g.offsets.device_ptr(stream);
        let (sm, _r3) = g.sign_mantissa.device_ptr(stream);
        let (tables, _r4) = g.tables.device_ptr(stream);
        // The report is only ever updated atomically, so launches that share it
        // (even concurrently) do not race; reading it is `decode_checked`'s job.
        let (error, _r5) = g.error.device_ptr(stream);
        let (out_ptr, _w) = out.device_ptr_mut(stream);
        if out_ptr % 16 != 0 {
            return Err(gpu_err("the output buffer is not 16-byte aligned"));
        }
        let mut args: [*mut c_void; 13] = [
            arg(&descs),
            arg(&descs_len),
            arg(&words),
            arg(&words_len),
            arg(&offsets),
            arg(&offsets_len),
            arg(&sm),
            arg(&sm_len),
            arg(&tables),
            arg(&tables_len),
            arg(&out_ptr),
            arg(&out_len),
            arg(&error),
        ];
        self.ctx.bind_to_thread().map_err(gpu_err)?;
        // SAFETY: the arguments match `df11_decode_group`'s parameters in
        // order and type (device pointers and `usize` lengths, all 8 bytes).
        // Every input buffer holds at least its stated length, `out` holds
        // `out_len` elements and is 16-byte aligned (checked above), and the
        // layout was validated by `GroupLayout::new`, so the kernel's accesses
        // stay in bounds. `args` outlives the call, which copies the values.
        unsafe {
            cudarc::driver::result::launch_kernel(
                self.func.cu_function(),
                (g.grid, 1, 1),
                (self.geometry.block_threads, 1, 1),
                self.geometry.shared_bytes,
                stream.cu_stream(),
                &mut args,
            )
        }
        .map_err(|e| gpu_err(format!("launch: {e}")))
    }

    /// [`GpuDecoder::decode_into`], then waits for the result and checks the
    /// kernel's error report: [`Error::CorruptStream`] (with the first bad
    /// segment, numbered across the group) if any segment's stream was corrupt.
    pub fn decode_checked<O: DevicePtrMut<u16>>(
        &self,
        g: &mut DeviceGroup,
        out: &mut O,
        stream: &Arc<CudaStream>,
    ) -> Result<()> {
        stream.memcpy_htod(&ERROR_CLEAR, &mut g.error).map_err(gpu_err)?;
        self.decode_into(g, out, stream)?;
        let mut report = ERROR_CLEAR;
        stream.memcpy_dtoh(&g.error, &mut report).map_err(gpu_err)?;
        stream.synchronize().map_err(gpu_err)?;
        check_report(report[0], report[1])
    }

    /// Decodes `g` into a new host vector (allocates; for tests and tools).
    pub fn decode(&self, g: &mut DeviceGroup) -> Result<Vec<u16>> {
        let s = self.stream.clone();
        let mut out = s.alloc_zeros::<u16>(g.total_elements.max(1)).map_err(gpu_err)?;
        self.decode_checked(g, &mut out, &s)?;
        let mut v = s.clone_dtoh(&out).map_err(gpu_err)?;
        v.truncate(g.total_elements);
        Ok(v)
    }
}

/// Kernel argument slot: a pointer to the argument's value.
fn arg<T>(v: &T) -> *mut c_void {
    (v as *const T).cast_mut().cast()
}

/// The kernel's [`ErrorReport`] before a launch: no flags, no bad segment.
const ERROR_CLEAR: [u32; 2] = [0, u32::MAX];

/// Turns the kernel's error report into a result.
fn check_report(flags: u32, first_bad_segment: u32) -> Result<()> {
    if flags & ERR_LAUNCH != 0 {
        return Err(gpu_err("the kernel rejected its launch shape"));
    }
    if flags & ERR_WORD_COUNT != 0 {
        return Err(Error::CorruptStream { segment: u64::from(first_bad_segment) });
    }
    Ok(())
}

/// Runs the decode kernel's logic on the CPU block emulator (one OS thread per
/// GPU thread): `grid_dim` blocks of `warps` warps. Returns each output
/// element (`None` if never written) and what the kernel reported. For tests.
pub fn decode_emulated(group: &Group, grid_dim: u32, warps: u32) -> Result<(Vec<Option<u16>>, Result<()>)> {
    let layout = GroupLayout::new(group)?;
    let out = crate::emu::EmuOut::new(layout.total_elements as usize);
    let report =
        ErrorReport { flags: AtomicU32::new(ERROR_CLEAR[0]), first_bad_segment: AtomicU32::new(ERROR_CLEAR[1]) };
    let input = layout.input();
    let launch = crate::emu::Launch { grid_dim, block_dim: warps * LANES as u32, shared_words: TABLE_WORDS };
    crate::emu::run(launch, |t| df11_gpu::decode::decode_group(t, &input, &out, &report));
    let checked = check_report(report.flags.into_inner(), report.first_bad_segment.into_inner());
    Ok((out.into_vec(), checked))
}

#[cfg(test)]
mod tests;
