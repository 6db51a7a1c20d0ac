//! A CPU emulation of a CUDA thread block, for running the kernels' logic from
//! `df11-gpu` in tests without a GPU.
//!
//! Every GPU thread is a real OS thread, so the kernel functions run exactly as
//! written: barriers are real barriers, shared memory is shared between the
//! threads, and a barrier missing between a write and a read shows up as a
//! wrong result (or a deadlock, which is the same bug on a GPU). Blocks run one
//! after another, which CUDA permits.

use df11_gpu::format::{LANE_RUN, LANES};
use df11_gpu::thread::{GlobalOut, GlobalRuns, Runs, Thread};
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Barrier, Mutex};

/// Launch shape of an emulated kernel.
#[derive(Clone, Copy, Debug)]
pub struct Launch {
    /// Blocks in the grid (`gridDim.x`).
    pub grid_dim: u32,
    /// Threads per block (`blockDim.x`).
    pub block_dim: u32,
    /// Dynamic shared memory, in `u32` words.
    pub shared_words: usize,
}

/// One emulated GPU thread.
pub struct EmuThread<'a> {
    thread_idx: u32,
    block_idx: u32,
    launch: Launch,
    barrier: &'a Barrier,
    shared: &'a [AtomicU32],
    warp: &'a Warp,
    /// Which of the warp's two exchange buffers this thread's next warp operation uses.
    phase: Cell<usize>,
}

/// The lanes of one emulated warp and the buffers their warp operations
/// exchange values through.
///
/// A warp operation is: write this lane's value into `slots[phase]`, wait at
/// the warp barrier, read the other lanes' values. Consecutive operations
/// alternate buffers, so one barrier per operation suffices: a lane can only
/// write buffer `p` again after passing the next operation's barrier, which
/// every lane reaches only once done reading buffer `p`.
struct Warp {
    lanes: usize,
    barrier: Barrier,
    slots: [[AtomicU32; LANES]; 2],
}

impl Warp {
    fn new(lanes: usize) -> Self {
        Warp { lanes, barrier: Barrier::new(lanes), slots: Default::default() }
    }
}

impl EmuThread<'_> {
    /// Publishes `v` for this lane, waits for the whole warp and returns the
    /// buffer holding every lane's value.
    fn exchange(&self, v: u32) -> &[AtomicU32; LANES] {
        let p = self.phase.get();
        self.phase.set(p ^ 1);
        let slots = &self.warp.slots[p];
        slots[self.lane_id() as usize].store(v, Ordering::Relaxed);
        // The barrier orders the stores before the loads (it synchronizes).
        self.warp.barrier.wait();
        slots
    }
}

impl Thread for EmuThread<'_> {
    fn thread_idx(&self) -> u32 {
        self.thread_idx
    }
    fn block_idx(&self) -> u32 {
        self.block_idx
    }
    fn block_dim(&self) -> u32 {
        self.launch.block_dim
    }
    fn grid_dim(&self) -> u32 {
        self.launch.grid_dim
    }
    fn sync_threads(&self) {
        self.barrier.wait();
    }
    fn shared_len(&self) -> usize {
        self.shared.len()
    }
    fn shared_load(&self, i: usize) -> u32 {
        // Relaxed is enough: the barrier orders writes before reads, as on a GPU.
        self.shared[i].load(Ordering::Relaxed)
    }
    fn shared_store(&self, i: usize, v: u32) {
        self.shared[i].store(v, Ordering::Relaxed)
    }
    fn shared_load_u16(&self, i: usize) -> u16 {
        (self.shared[i / 2].load(Ordering::Relaxed) >> (16 * (i % 2))) as u16
    }
    fn lane_id(&self) -> u32 {
        self.thread_idx % LANES as u32
    }
    fn ballot(&self, pred: bool) -> u32 {
        let slots = self.exchange(u32::from(pred));
        (0..self.warp.lanes).filter(|&j| slots[j].load(Ordering::Relaxed) != 0).fold(0, |m, j| m | 1 << j)
    }
    fn shfl(&self, v: u32, src_lane: u32) -> u32 {
        let src = (src_lane % LANES as u32) as usize;
        let slots = self.exchange(v);
        assert!(src < self.warp.lanes, "shfl from lane {src} of a {}-lane warp", self.warp.lanes);
        slots[src].load(Ordering::Relaxed)
    }
}

/// Runs `kernel` once per emulated thread of every block of `launch`.
///
/// Shared memory starts filled with a poison pattern each block, so logic that
/// reads shared memory it never wrote gives visibly wrong output.
pub fn run<F>(launch: Launch, kernel: F)
where
    F: Fn(&EmuThread<'_>) + Sync,
{
    assert!(launch.block_dim >= 1, "a block needs at least one thread");
    for block_idx in 0..launch.grid_dim {
        let shared: Vec<AtomicU32> = (0..launch.shared_words).map(|_| AtomicU32::new(0xDEAD_BEEF)).collect();
        let barrier = Barrier::new(launch.block_dim as usize);
        let block_dim = launch.block_dim as usize;
        let warps: Vec<Warp> =
            (0..block_dim.div_ceil(LANES)).map(|w| Warp::new(LANES.min(block_dim - w * LANES))).collect();
        std::thread::scope(|s| {
            for thread_idx in 0..launch.block_dim {
                let warp = &warps[thread_idx as usize / LANES];
                let t = EmuThread {
                    thread_idx,
                    block_idx,
                    launch,
                    barrier: &barrier,
                    shared: &shared,
                    warp,
                    phase: Cell::new(0),
                };
                let kernel = &kernel;
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || kernel(&t))
                    .expect("spawn emulated GPU thread");
            }
        });
    }
}

/// Output buffer for emulated kernels. It records which elements were written
/// and panics if any element is written twice in one launch, which on a GPU
/// would be a race.
pub struct EmuOut<T> {
    cells: Vec<Mutex<Option<T>>>,
}

impl<T: Copy> EmuOut<T> {
    /// `len` unwritten elements.
    pub fn new(len: usize) -> Self {
        EmuOut { cells: (0..len).map(|_| Mutex::new(None)).collect() }
    }

    /// Every element, `None` where the kernel wrote nothing.
    pub fn into_vec(self) -> Vec<Option<T>> {
        self.cells.into_iter().map(|c| c.into_inner().expect("no thread panicked holding a cell")).collect()
    }
}

impl<T: Copy> GlobalOut<T> for EmuOut<T> {
    fn len(&self) -> usize {
        self.cells.len()
    }
    fn store(&self, i: usize, v: T) {
        let mut cell = self.cells[i].lock().expect("no thread panicked holding a cell");
        assert!(cell.is_none(), "element {i} written twice in one launch");
        *cell = Some(v);
    }
}

impl GlobalRuns for EmuOut<u16> {
    type Runs<'a> = EmuRuns<'a>;
    fn runs(&self, start: usize, count: u32) -> Option<EmuRuns<'_>> {
        let end = (count as usize).checked_mul(LANE_RUN)?.checked_add(start)?;
        // The GPU's 16-byte stores need this alignment; hold emulated kernels to it.
        (start.is_multiple_of(LANE_RUN) && end <= self.len()).then_some(EmuRuns { out: self, start, count })
    }
}

/// Runs of an [`EmuOut`], stored element by element.
pub struct EmuRuns<'a> {
    out: &'a EmuOut<u16>,
    start: usize,
    count: u32,
}

impl Runs for EmuRuns<'_> {
    fn store(&self, k: u32, v: [u32; LANE_RUN / 2]) {
        assert!(k < self.count, "run {k} of a stretch of {}", self.count);
        let i = self.start + k as usize * LANE_RUN;
        for (j, x) in v.into_iter().enumerate() {
            self.out.store(i + 2 * j, x as u16);
            self.out.store(i + 2 * j + 1, (x >> 16) as u16);
        }
    }
}
