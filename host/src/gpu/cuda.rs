//! The launcher: the decode kernel loaded on a device through the CUDA
//! driver API (`cudarc`), groups uploaded once, and launches that allocate
//! nothing.

use super::{ERROR_CLEAR, Geometry, GroupLayout, Slicing, check_report, gpu_err};
use crate::container::Group;
use crate::error::{Error, Result};
use cudarc::driver::sys::{CUdevice_attribute, CUdeviceptr, CUfunction_attribute};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr,
    SyncOnDrop,
};
use cudarc::nvrtc::Ptx;
use df11_gpu::decode::{INDEX_KERNEL_NAME, KERNEL_NAME, LANES_KERNEL_NAME, LANES9_KERNEL_NAME};
use df11_gpu::format::{MULTI_TABLE_WORDS, TABLE_WORDS};
use std::ffi::c_void;
use std::sync::Arc;

/// Threads per block: 8 warps, each decoding its own segment. A block shares
/// one 8 KiB table, so larger blocks spend less shared memory and fewer table
/// loads per warp; smaller ones idle fewer warps on a tensor's last, partly
/// filled item and at table switches. 256 threads also divide the thread limit
/// of every SM generation since sm_80 (2048 or 1536).
const BLOCK_THREADS: u32 = 256;

/// The warp kernel's shared memory: one decode table.
const SHARED_BYTES: u32 = (TABLE_WORDS * 4) as u32;

/// Threads per block of the lanes kernel: two warps. Its work is one warp
/// per segment, and the tensors of a 1B model's block have only a few
/// hundred segments, which small blocks spread over more multiprocessors
/// (a warp here issues about two thirds of the time, so a few per SM keep
/// its schedulers busy); its 32 KiB table still serves 2 segments per load.
const LANES_BLOCK_THREADS: u32 = 64;

/// The lanes kernel's shared memory: one multi-symbol table.
const LANES_SHARED_BYTES: u32 = (MULTI_TABLE_WORDS * 4) as u32;

/// Dynamic shared memory a kernel may use without opting in.
const DEFAULT_MAX_DYNAMIC_SHARED: u32 = 48 * 1024;

/// Device buffers [`GpuDecoder::decode_into`] writes to: cudarc's own
/// (`CudaSlice<u16>`, `CudaViewMut<u16>`). Sealed, because the kernel is
/// trusted with the pointer and length the buffer states, and `DevicePtrMut`
/// is a safe trait that any type could implement with other values.
pub trait DeviceOutput: DevicePtrMut<u16> + sealed::Sealed {}

impl DeviceOutput for CudaSlice<u16> {}
impl DeviceOutput for CudaViewMut<'_, u16> {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for cudarc::driver::CudaSlice<u16> {}
    impl Sealed for cudarc::driver::CudaViewMut<'_, u16> {}
}

/// The decode kernel, loaded on one device.
pub struct GpuDecoder {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    // Keeps the module (and so the functions) loaded.
    _module: Arc<CudaModule>,
    /// The warp-layout kernel and the lanes-layout kernel.
    /// The decode kernels (warp, lanes, lanes9), then the lane index kernel.
    kernels: [Kernel; 4],
    name: String,
}

/// One kernel of the module and how it is launched on this device.
struct Kernel {
    func: CudaFunction,
    geometry: Geometry,
}

/// A group resident in device memory, ready for [`GpuDecoder::decode_into`].
pub struct DeviceGroup {
    read: ReadInputs,
    lane_index: CudaSlice<u32>,
    error: CudaSlice<u32>,
    /// True element counts of the six input buffers (an empty one is
    /// allocated with one element: the driver rejects zero-byte allocations).
    lens: [usize; 6],
    /// Rows of the slices of the lane index (`None`: no index).
    slice_rows: Option<u32>,
    total_elements: usize,
    num_tensors: usize,
    payload_bytes: u64,
    /// Blocks of the warp, lanes and lanes9 decode kernels (0: no launch).
    grids: [u32; 3],
}

/// The five inputs every kernel only reads, in kernel argument order (see
/// [`kernel_args`]).
struct ReadInputs {
    descs: CudaSlice<u64>,
    words: CudaSlice<u32>,
    offsets: CudaSlice<u32>,
    sign_mantissa: CudaSlice<u64>,
    tables: CudaSlice<u32>,
}

impl ReadInputs {
    /// Their device pointers, with the guards that order their use on
    /// `stream` until dropped.
    fn ptrs<'a>(&'a self, stream: &'a CudaStream) -> ([CUdeviceptr; 5], [SyncOnDrop<'a>; 5]) {
        let (descs, g0) = self.descs.device_ptr(stream);
        let (words, g1) = self.words.device_ptr(stream);
        let (offsets, g2) = self.offsets.device_ptr(stream);
        let (sm, g3) = self.sign_mantissa.device_ptr(stream);
        let (tables, g4) = self.tables.device_ptr(stream);
        ([descs, words, offsets, sm, tables], [g0, g1, g2, g3, g4])
    }
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

    /// Compressed bytes one decode reads (code words plus raw bytes).
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Blocks one decode launches (0 for a group without elements).
    pub fn grid(&self) -> u32 {
        self.grids[0]
    }

    /// Blocks in the lanes-layout kernel's launch (0 when the group has no
    /// lanes tensor).
    pub fn lanes_grid(&self) -> u32 {
        self.grids[1]
    }

    /// Blocks in the lanes9-layout kernel's launch (0 when the group has no
    /// lanes9 tensor).
    pub fn lanes9_grid(&self) -> u32 {
        self.grids[2]
    }

    /// Rows of the slices its lane index cuts segments into (`None`: no
    /// index, one warp per segment).
    pub fn slice_rows(&self) -> Option<u32> {
        self.slice_rows
    }
}

impl GpuDecoder {
    /// Loads `ptx` on device `ordinal`.
    ///
    /// Fails cleanly when there is no CUDA driver, no such device, the device
    /// is older than sm_80 or the driver rejects the module.
    ///
    /// # Safety
    /// `ptx` must be the kernels of `df11-gpu` of this very version, compiled
    /// to PTX (as the `df11` crate embeds them: `df11::PTX`, loaded by
    /// `df11::gpu::decoder`). The decoder launches the module's
    /// `KERNEL_NAME` and `LANES_KERNEL_NAME` functions with the arguments and
    /// launch shapes those kernels expect and trusts them to stay within the
    /// buffers they are given; any other code under those names could read or
    /// write any device memory.
    pub unsafe fn with_ptx(ordinal: usize, ptx: &str) -> Result<Self> {
        // Loaded at run time, the driver may be missing: cudarc would panic.
        #[cfg(feature = "dynamic-loading")]
        // SAFETY: probing only loads and unloads the driver library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(gpu_err("no CUDA driver library found"));
        }
        let count = CudaContext::device_count().map_err(|e| gpu_err(format!("CUDA driver unusable: {e}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(gpu_err(format!("no CUDA device {ordinal} ({count} present)")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| gpu_err(format!("cannot open CUDA device {ordinal}: {e}")))?;
        // SAFETY: the caller vouches for `ptx`, as `with_context` requires.
        unsafe { Self::with_context(ctx, ptx) }
    }

    /// Loads `ptx` in an existing context (say, another library's, so that
    /// its streams and buffers can be used with this decoder, which checks
    /// that they share its context). Decodes go to the context's default
    /// stream unless a stream is given.
    ///
    /// Fails cleanly when the device is older than sm_80 or the driver
    /// rejects the module.
    ///
    /// # Safety
    /// As for [`GpuDecoder::with_ptx`]: `ptx` must be this version's
    /// `df11-gpu` kernels.
    pub unsafe fn with_context(ctx: Arc<CudaContext>, ptx: &str) -> Result<Self> {
        let (major, minor) = ctx.compute_capability().map_err(gpu_err)?;
        let name = ctx.name().map_err(gpu_err)?;
        if major < 8 {
            return Err(gpu_err(format!("{name} is sm_{major}{minor}; the decoder needs sm_80 or newer")));
        }
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(|e| gpu_err(format!("loading the PTX: {e}")))?;
        let attr = |a| ctx.attribute(a).map_err(gpu_err);
        let sm_count = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
        let max_threads_per_sm = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)? as u32;
        let smem_per_sm = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)? as u32;
        let kernel = |name: &str, block_threads: u32, shared_bytes: u32| -> Result<Kernel> {
            let func = module.load_function(name).map_err(|e| gpu_err(format!("kernel {name}: {e}")))?;
            if shared_bytes > DEFAULT_MAX_DYNAMIC_SHARED {
                // Only needed if a table ever grows past 48 KiB; kept so the
                // limit cannot silently bite.
                func.set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    shared_bytes as i32,
                )
                .map_err(gpu_err)?;
            }
            // The occupancy calculator also knows the kernel's register count; the
            // thread and shared-memory bounds are the fallback if it answers 0.
            let by_limits = (max_threads_per_sm / block_threads).min(smem_per_sm / shared_bytes).max(1);
            let blocks_per_sm = func
                .occupancy_max_active_blocks_per_multiprocessor(block_threads, shared_bytes as usize, None)
                .map_err(gpu_err)?;
            let blocks_per_sm = if blocks_per_sm == 0 { by_limits } else { blocks_per_sm.min(by_limits) };
            Ok(Kernel { func, geometry: Geometry { block_threads, shared_bytes, sm_count, blocks_per_sm } })
        };
        let kernels = [
            kernel(KERNEL_NAME, BLOCK_THREADS, SHARED_BYTES)?,
            kernel(LANES_KERNEL_NAME, LANES_BLOCK_THREADS, LANES_SHARED_BYTES)?,
            kernel(LANES9_KERNEL_NAME, LANES_BLOCK_THREADS, LANES_SHARED_BYTES)?,
            kernel(INDEX_KERNEL_NAME, LANES_BLOCK_THREADS, LANES_SHARED_BYTES)?,
        ];
        let stream = ctx.default_stream();
        Ok(GpuDecoder { ctx, stream, _module: module, kernels, name })
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
        self.kernels[0].geometry
    }

    /// The launch geometry of the lanes-layout kernel on this device.
    pub fn lanes_geometry(&self) -> Geometry {
        self.kernels[1].geometry
    }

    /// Validates `group` and copies it to the device. A group whose lanes
    /// segments are too few to give every warp the device holds at once one
    /// gets a lane index (`Slicing::Fill`), so that several warps share each
    /// segment; the index kernel builds it on the device, walking each
    /// segment's codes once (about one decode of the group).
    pub fn upload(&self, group: &Group) -> Result<DeviceGroup> {
        let g = self.lanes_geometry();
        let resident = u64::from(g.sm_count) * u64::from(g.blocks_per_sm.max(1)) * u64::from(g.warps_per_block());
        self.upload_with(group, Slicing::Fill(resident))
    }

    /// [`GpuDecoder::upload`] with the lane index `slicing` asks for.
    pub fn upload_with(&self, group: &Group, slicing: Slicing) -> Result<DeviceGroup> {
        let mut layout = GroupLayout::new(group)?;
        let slice_rows = layout.plan_slices(slicing);
        let mut g = self.upload_layout(&layout, slice_rows)?;
        if slice_rows.is_some() {
            self.build_index(&mut g, &layout)?;
        }
        Ok(g)
    }

    /// Fills `g`'s lane index (uploaded as zeros, sized by
    /// `GroupLayout::plan_slices`) with the index kernel, and waits for it.
    fn build_index(&self, g: &mut DeviceGroup, l: &GroupLayout) -> Result<()> {
        let stream = &self.stream;
        let k = &self.kernels[3];
        let warps = u64::from(k.geometry.warps_per_block());
        let segments: u64 = l.sliced().iter().map(|d| u64::from(d.num_segments).div_ceil(warps)).sum();
        let grid = k.geometry.grid_for(segments);
        let index_len = g.lens[5];
        {
            let (read, _r) = g.read.ptrs(stream);
            let (error, _r5) = g.error.device_ptr(stream);
            let (index, _w) = g.lane_index.device_ptr_mut(stream);
            // The index is written, not read: its input slice is empty.
            let mut args = kernel_args(&read, &g.lens, (&index, &0), (&index, &index_len), &error);
            self.ctx.bind_to_thread().map_err(gpu_err)?;
            // SAFETY: the module is df11's kernels (the contract of `with_ptx`),
            // so the arguments match `df11_index_group_lanes`'s parameters in
            // order and type (device pointers and `usize` lengths, all 8 bytes).
            // Every input buffer holds at least its stated length, the index
            // input is given as empty, and the output is the group's own index
            // buffer of `index_len` elements, which nothing else uses during the
            // launch (the group is borrowed mutably). The layout was validated by
            // `GroupLayout::new` and sliced by `plan_slices`, so the kernel's
            // accesses stay in bounds. `args` outlives the call.
            unsafe {
                cudarc::driver::result::launch_kernel(
                    k.func.cu_function(),
                    (grid.max(1), 1, 1),
                    (k.geometry.block_threads, 1, 1),
                    k.geometry.shared_bytes,
                    stream.cu_stream(),
                    &mut args,
                )
            }
            .map_err(|e| gpu_err(format!("index launch: {e}")))?;
        }
        let mut report = ERROR_CLEAR;
        stream.memcpy_dtoh(&g.error, &mut report).map_err(gpu_err)?;
        stream.synchronize().map_err(gpu_err)?;
        check_report(report[0], report[1])
    }

    /// Copies a layout to the device. Private: only layouts built by
    /// `GroupLayout::new` from a group (hence validated) reach the kernel.
    fn upload_layout(&self, l: &GroupLayout, slice_rows: Option<u32>) -> Result<DeviceGroup> {
        let s = &self.stream;
        fn put<T: DeviceRepr + Default>(s: &Arc<CudaStream>, v: &[T]) -> Result<CudaSlice<T>> {
            let r = if v.is_empty() { s.clone_htod(&[T::default()]) } else { s.clone_htod(v) };
            r.map_err(|e| gpu_err(format!("upload: {e}")))
        }
        let [warp, lanes, lanes9, _] = &self.kernels;
        let grids = [
            warp.geometry.grid_for(l.items(df11_gpu::format::LAYOUT_WARP, warp.geometry.warps_per_block())),
            lanes.geometry.grid_for(l.items(df11_gpu::format::LAYOUT_LANES, lanes.geometry.warps_per_block())),
            lanes9.geometry.grid_for(l.items(df11_gpu::format::LAYOUT_LANES9, lanes9.geometry.warps_per_block())),
        ];
        Ok(DeviceGroup {
            read: ReadInputs {
                descs: put(s, &l.descs)?,
                words: put(s, &l.words)?,
                offsets: put(s, &l.offsets)?,
                sign_mantissa: put(s, &l.sign_mantissa)?,
                tables: put(s, &l.tables)?,
            },
            lane_index: put(s, &l.lane_index)?,
            error: put(s, &ERROR_CLEAR)?,
            lens: [
                l.descs.len(),
                l.words.len(),
                l.offsets.len(),
                l.sign_mantissa.len(),
                l.tables.len(),
                l.lane_index.len(),
            ],
            slice_rows,
            total_elements: l.total_elements as usize,
            num_tensors: l.num_tensors(),
            payload_bytes: l.payload_bytes,
            grids,
        })
    }

    /// Enqueues the decode of `g` into the first `g.num_elements()` elements
    /// of `out` on `stream`; returns without waiting.
    ///
    /// Allocates nothing. A corrupt stream cannot make the kernel read or
    /// write out of bounds; it sets `g`'s error report, which stays set until
    /// [`GpuDecoder::decode_checked`] resets and reads it.
    pub fn decode_into<O: DeviceOutput>(&self, g: &DeviceGroup, out: &mut O, stream: &CudaStream) -> Result<()> {
        if out.len() < g.total_elements {
            return Err(Error::OutputLength { expected: g.total_elements as u64, actual: out.len() as u64 });
        }
        let ours = |c: &Arc<CudaContext>| Arc::ptr_eq(c, &self.ctx);
        if !ours(stream.context()) || !ours(g.read.descs.context()) || !ours(out.stream().context()) {
            return Err(gpu_err("the stream, group or output belongs to another device context"));
        }
        if g.grids == [0, 0, 0] {
            return Ok(());
        }
        let out_len = g.total_elements;
        let (read, _r) = g.read.ptrs(stream);
        let (index, _r6) = g.lane_index.device_ptr(stream);
        // The report is only ever updated atomically, so launches that share it
        // (even concurrently) do not race; reading it is `decode_checked`'s job.
        let (error, _r5) = g.error.device_ptr(stream);
        let (out_ptr, _w) = out.device_ptr_mut(stream);
        if out_ptr % 16 != 0 {
            return Err(gpu_err("the output buffer is not 16-byte aligned"));
        }
        let mut args = kernel_args(&read, &g.lens, (&index, &g.lens[5]), (&out_ptr, &out_len), &error);
        self.ctx.bind_to_thread().map_err(gpu_err)?;
        // One launch per layout present; both write disjoint parts of `out`.
        for (k, &grid) in self.kernels[..3].iter().zip(&g.grids).filter(|(_, grid)| **grid > 0) {
            // SAFETY: the module is df11's kernels (the contract of
            // `with_ptx`), so the arguments match the parameters of each of
            // `df11_decode_group`, `df11_decode_group_lanes` and
            // `df11_decode_group_lanes9` in order and
            // type (device pointers and `usize` lengths, all 8 bytes). Every
            // input buffer holds at least its stated length, `out` (one of
            // cudarc's own buffers: `DeviceOutput` is sealed) holds `out_len`
            // elements and is 16-byte aligned (checked above), and the layout
            // was validated by `GroupLayout::new`, so the kernel's accesses
            // stay in bounds. `args` outlives the call, which copies the values.
            unsafe {
                cudarc::driver::result::launch_kernel(
                    k.func.cu_function(),
                    (grid, 1, 1),
                    (k.geometry.block_threads, 1, 1),
                    k.geometry.shared_bytes,
                    stream.cu_stream(),
                    &mut args,
                )
            }
            .map_err(|e| gpu_err(format!("launch: {e}")))?;
        }
        Ok(())
    }

    /// [`GpuDecoder::decode_into`], then waits for the result and checks the
    /// kernel's error report: [`Error::CorruptStream`] (with the first bad
    /// segment, numbered across the group) if any segment's stream was corrupt.
    pub fn decode_checked<O: DeviceOutput>(
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

/// The argument slots every kernel of the module takes, in order: the five
/// read-only inputs (`descs`, `words`, `offsets`, `sign_mantissa`, `tables`)
/// with their lengths (the first five of `lens`), the lane index and its
/// length, the output and its length, the error report. The slots point at
/// the values passed, which must outlive the launch.
fn kernel_args(
    read: &[CUdeviceptr; 5],
    lens: &[usize; 6],
    index: (&CUdeviceptr, &usize),
    out: (&CUdeviceptr, &usize),
    error: &CUdeviceptr,
) -> [*mut c_void; 15] {
    let mut a = [std::ptr::null_mut(); 15];
    for (i, (p, n)) in read.iter().zip(lens).enumerate() {
        (a[2 * i], a[2 * i + 1]) = (arg(p), arg(n));
    }
    (a[10], a[11], a[12], a[13], a[14]) = (arg(index.0), arg(index.1), arg(out.0), arg(out.1), arg(error));
    a
}

/// Kernel argument slot: a pointer to the argument's value.
fn arg<T>(v: &T) -> *mut c_void {
    (v as *const T).cast_mut().cast()
}
