//! Decoding units to host memory: the [`Decoder`] seam (CPU here, GPU in
//! [`super::gpu`]) and the byte-level helpers shared by reading and writing.

use super::error::{Error, Result, tensor_err};
use super::safetensors::check_size;
use super::{Checkpoint, Loc, Payload, Shard, Unit};
use crate::dfloat11::{ModuleArrays, decode_module};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Decodes single-tensor df11 containers to host memory.
pub trait Decoder: Sync {
    /// Decodes a single-tensor container into `out` (one `u16` per element).
    fn decode(&self, container: &[u8], out: &mut [u16]) -> std::result::Result<(), String>;

    /// Decodes a single-tensor container and compares it with `expected`
    /// (one `u16` per element): the index of the first element that
    /// differs and the element decoded there, `None` if all are equal. By
    /// default it decodes into a new buffer; a decoder may compare without
    /// storing the whole output.
    fn compare(
        &self,
        container: &[u8],
        expected: &[u16],
    ) -> std::result::Result<Option<df11_host::decode::Difference>, String> {
        let mut out = vec![0u16; expected.len()];
        self.decode(container, &mut out)?;
        Ok(out.iter().zip(expected).position(|(a, b)| a != b).map(|i| (i as u64, out[i])))
    }

    /// Whether the checkpoint writer may decode this decoder's tensors
    /// itself, on the CPU, a run of segments at a time as it writes them
    /// ([`df11_host::decode::Runs`]): what [`CpuDecoder`] does.
    fn streams(&self) -> bool {
        false
    }
}

/// The CPU decoder (the fast decoder on the current rayon pool; the data
/// CRC is checked). It reads the container in place (no copy of its data,
/// [`df11_host::TensorView`]) and compares segment by segment.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuDecoder;

impl Decoder for CpuDecoder {
    fn decode(&self, container: &[u8], out: &mut [u16]) -> std::result::Result<(), String> {
        df11_host::decode::decode_container_into(container, out, &df11_host::DecodeOptions::default()).map_err(message)
    }

    fn compare(
        &self,
        container: &[u8],
        expected: &[u16],
    ) -> std::result::Result<Option<df11_host::decode::Difference>, String> {
        df11_host::decode::compare_container(container, expected, &df11_host::DecodeOptions::default()).map_err(message)
    }

    fn streams(&self) -> bool {
        true
    }
}

/// A decode error as the checkpoint reports it: the output length is the
/// tensor's shape here.
pub(crate) fn message(e: df11_host::Error) -> String {
    match e {
        df11_host::Error::OutputLength { expected, actual } => elements_err(expected, actual as usize),
        e => e.to_string(),
    }
}

pub(crate) fn elements_err(held: u64, numel: usize) -> String {
    format!("container holds {held} elements, the tensor's shape needs {numel}")
}

/// Parses a container and checks it holds `numel` elements.
#[cfg(feature = "gpu")]
pub(crate) fn parse_container(container: &[u8], numel: usize) -> std::result::Result<crate::CompressedTensor, String> {
    let t = crate::CompressedTensor::from_bytes(container).map_err(|e| e.to_string())?;
    if t.num_elements != numel as u64 {
        return Err(elements_err(t.num_elements, numel));
    }
    Ok(t)
}

/// The version field of a container, if the bytes start like one.
pub fn container_version(container: &[u8]) -> Option<u16> {
    (container.len() >= 6 && &container[..4] == b"DF11").then(|| u16::from_le_bytes([container[4], container[5]]))
}

/// The layout of a single-tensor container's record, if the bytes go that far
/// and name one.
pub(crate) fn container_layout(container: &[u8]) -> Option<crate::Layout> {
    let at = crate::format::CONTAINER_HEADER_BYTES + crate::format::RECORD_LAYOUT_BYTE;
    container.get(at).copied().and_then(crate::Layout::from_code)
}

/// Views little-endian 16-bit data as `u16`s, copying only if it is unaligned
/// (safetensors data offsets are not guaranteed to be even) or the host is big-endian.
pub(crate) fn bytes_to_u16(bytes: &[u8]) -> Cow<'_, [u16]> {
    if cfg!(target_endian = "little")
        && let Ok(v) = bytemuck::try_cast_slice(bytes)
    {
        return Cow::Borrowed(v);
    }
    Cow::Owned(bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
}

/// The little-endian bytes of `u16`s (a view on little-endian hosts).
pub(crate) fn u16_to_bytes(v: &[u16]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(v))
    } else {
        Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// Decodes a df11 container into `out` bytes: straight into `out` when it is
/// `u16`-aligned on a little-endian host, through a temporary otherwise.
fn decode_df11_into(container: &[u8], out: &mut [u8], dec: &dyn Decoder) -> std::result::Result<(), String> {
    if cfg!(target_endian = "little")
        && let Ok(bits) = bytemuck::try_cast_slice_mut::<u8, u16>(out)
    {
        return dec.decode(container, bits);
    }
    let mut bits = vec![0u16; out.len() / 2];
    dec.decode(container, &mut bits)?;
    out.copy_from_slice(&u16_to_bytes(&bits));
    Ok(())
}

/// Buffers of decoded tensors, handed back once written and taken again for
/// the next ones: a streaming decompress of a large checkpoint then reuses a
/// few buffers instead of faulting in fresh memory, page by page, for every
/// tensor. The pool holds buffers only while a writer's [`pool::Scope`] is
/// open, up to the bytes the scope allows (the writer's two batches), and
/// the scope empties it when it ends: memory stays bounded by the batch
/// budget (`tests/memory.rs`).
pub(crate) mod pool {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, MutexGuard};

    /// Free buffers, and how many bytes of them may be kept.
    pub struct Pool {
        free: Mutex<Vec<Vec<u8>>>,
        limit: AtomicU64,
    }

    /// The pool the checkpoint writers and decoders share.
    static SHARED: Pool = Pool::new();

    impl Pool {
        /// An empty pool that keeps nothing until [`Pool::set_limit`].
        pub const fn new() -> Self {
            Pool { free: Mutex::new(Vec::new()), limit: AtomicU64::new(0) }
        }

        fn free(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
            // A panic elsewhere cannot leave the list inconsistent: use it as is.
            self.free.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// Keeps at most `bytes` of free buffers from now on.
        pub fn set_limit(&self, bytes: u64) {
            self.limit.store(bytes, Ordering::Relaxed);
        }

        /// A buffer of `len` bytes whose contents are unspecified (earlier
        /// tensors' bytes, or zeros): the smallest free one that is large
        /// enough, or a new one in 2 MiB pages.
        pub fn take(&self, len: usize) -> Vec<u8> {
            let mut list = self.free();
            let best = (0..list.len()).filter(|&i| list[i].capacity() >= len).min_by_key(|&i| list[i].capacity());
            let Some(i) = best else {
                drop(list);
                return df11_host::hint::zeroed_bytes(len);
            };
            let mut v = list.swap_remove(i);
            drop(list);
            v.resize(len, 0);
            v
        }

        /// Hands a buffer back for [`Pool::take`]; dropped if keeping it
        /// would pass the limit.
        pub fn give(&self, v: Vec<u8>) {
            let mut list = self.free();
            let held: u64 = list.iter().map(|b| b.capacity() as u64).sum();
            if held + v.capacity() as u64 <= self.limit.load(Ordering::Relaxed) {
                list.push(v);
            }
        }

        /// Bytes of free buffers kept now.
        #[cfg(test)]
        pub fn held(&self) -> u64 {
            self.free().iter().map(|b| b.capacity() as u64).sum()
        }

        /// Frees every kept buffer and keeps none from now on.
        pub fn clear(&self) {
            self.set_limit(0);
            let list = std::mem::take(&mut *self.free());
            drop(list);
        }
    }

    /// Compressed tensors whose vectors the next encodes reuse
    /// (`compress_reusing`): one per thread at most, and only while a
    /// scope is open.
    static SPARES: Mutex<Vec<crate::CompressedTensor>> = Mutex::new(Vec::new());

    fn spares() -> MutexGuard<'static, Vec<crate::CompressedTensor>> {
        // As for the buffers: a panic elsewhere leaves a usable list.
        SPARES.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A spare tensor for the encode of `n` elements, if one is kept: the
    /// one with the least room that has enough, else the one with the most.
    pub fn take_spare(n: usize) -> Option<crate::CompressedTensor> {
        let mut list = spares();
        let room = |i: usize| list[i].sign_mantissa.capacity();
        let best = (0..list.len()).filter(|&i| room(i) >= n).min_by_key(|&i| room(i));
        let i = best.or_else(|| (0..list.len()).max_by_key(|&i| room(i)))?;
        Some(list.swap_remove(i))
    }

    /// Keeps `t`'s vectors for a next encode while a scope is open: as
    /// many as two batches of tensors hold.
    pub fn give_spare(t: crate::CompressedTensor) {
        let mut list = spares();
        if SHARED.limit.load(Ordering::Relaxed) > 0 && list.len() < 2 * rayon::current_num_threads() {
            list.push(t);
        }
    }

    /// [`Pool::take`] from the shared pool.
    pub fn take(len: usize) -> Vec<u8> {
        SHARED.take(len)
    }

    /// [`Pool::give`] to the shared pool.
    pub fn give(v: Vec<u8>) {
        SHARED.give(v)
    }

    /// Lets the shared pool keep `limit` bytes while it lives, and empties
    /// it when dropped (by error too): a writer holds one for its run.
    pub struct Scope;

    impl Scope {
        pub fn new(limit: u64) -> Self {
            SHARED.set_limit(limit);
            Scope
        }
    }

    impl Drop for Scope {
        fn drop(&mut self) {
            SHARED.clear();
            let list = std::mem::take(&mut *spares());
            drop(list);
        }
    }
}

/// Keeps the buffers handed back with [`recycle`] for the next decodes, up
/// to `limit` bytes, while it lives: a reader that decodes a checkpoint
/// tensor by tensor ([`Shard::decode_unit`]) then reuses a few buffers
/// instead of faulting in and zeroing fresh memory for every tensor.
/// Dropping it frees them. One at a time per process: the checkpoint writers
/// hold one too, so do not keep one across a write.
pub struct BufferReuse(#[allow(dead_code)] pool::Scope);

impl BufferReuse {
    /// Reuse up to `limit` bytes of buffers.
    pub fn new(limit: u64) -> Self {
        BufferReuse(pool::Scope::new(limit))
    }
}

/// Hands the buffers of decoded tensors back for reuse while a
/// [`BufferReuse`] lives; borrowed bytes (raw tensors) are left alone.
pub fn recycle(decoded: Vec<Cow<'_, [u8]>>) {
    for b in decoded {
        if let Cow::Owned(v) = b {
            pool::give(v);
        }
    }
}

/// Compares the tensors a unit decodes to with `expected` (one per output,
/// `None` for one not to compare): per output, the first byte that differs,
/// `None` where equal or not compared. A df11 tensor is compared as it is
/// decoded ([`Decoder::compare`]), without its output in memory.
pub(crate) fn compare(
    f: &Shard,
    unit: &Unit,
    expected: &[Option<&[u8]>],
    dec: &dyn Decoder,
) -> Result<Vec<Option<u64>>> {
    if let (Payload::Df11(t), [Some(want)], [o]) = (&unit.payload, expected, unit.outputs.as_slice())
        && Some(want.len() as u64) == o.num_elements().checked_mul(2)
    {
        let want16 = bytes_to_u16(want);
        let found = dec.compare(f.file.bytes(t), &want16).map_err(|e| tensor_err(&f.file.path, &t.name, e))?;
        // The element's little-endian bytes: the low one first.
        return Ok(vec![found.map(|(i, got)| 2 * i + u64::from(got as u8 == want16[i as usize] as u8))]);
    }
    let got = materialize(f, unit, dec)?;
    let out = got.iter().zip(expected).map(|(g, w)| w.and_then(|w| first_difference(w, g))).collect();
    recycle(got);
    Ok(out)
}

/// The first byte at which `a` and `b` differ (the shorter one's length when
/// one is a prefix of the other).
pub(crate) fn first_difference(a: &[u8], b: &[u8]) -> Option<u64> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()) as u64);
    }
    // Compare in large chunks first: equal is the common case.
    a.chunks(1 << 16).zip(b.chunks(1 << 16)).position(|(x, y)| x != y).map(|c| {
        let base = c << 16;
        (base + a[base..].iter().zip(&b[base..]).position(|(x, y)| x != y).unwrap_or(0)) as u64
    })
}

/// Produces a unit's tensors' bytes (borrowed for raw tensors).
pub(crate) fn materialize<'a>(f: &'a Shard, unit: &Unit, dec: &dyn Decoder) -> Result<Vec<Cow<'a, [u8]>>> {
    let path = &f.file.path;
    let out: Vec<Cow<'a, [u8]>> = match &unit.payload {
        Payload::Raw(t) => vec![Cow::Borrowed(f.file.bytes(t))],
        Payload::Df11(t) => {
            let o = &unit.outputs[0];
            let len = usize::try_from(o.num_elements())
                .ok()
                .and_then(|n| n.checked_mul(2))
                .ok_or_else(|| tensor_err(path, &t.name, "too large"))?;
            // Decoded straight into the bytes that are written, in a buffer
            // of an earlier tensor where one is free.
            let mut bytes = pool::take(len);
            decode_df11_into(f.file.bytes(t), &mut bytes, dec).map_err(|e| tensor_err(path, &t.name, e))?;
            vec![Cow::Owned(bytes)]
        }
        Payload::Dfloat11(a) => {
            let d = decode_dfloat11(f, a)?;
            d.pieces.iter().map(|r| Cow::Owned(u16_to_bytes(&d.bits[r.clone()]).into_owned())).collect()
        }
    };
    for (o, b) in unit.outputs.iter().zip(&out) {
        check_size(path, &o.name, &o.dtype, &o.shape, b.len())?;
    }
    Ok(out)
}

fn decode_dfloat11(f: &Shard, a: &[super::TensorInfo; 6]) -> Result<crate::dfloat11::Decoded> {
    let arrays = ModuleArrays {
        luts: f.file.bytes(&a[0]),
        encoded_exponent: f.file.bytes(&a[1]),
        sign_mantissa: f.file.bytes(&a[2]),
        output_positions: f.file.bytes(&a[3]),
        gaps: f.file.bytes(&a[4]),
        split_positions: f.file.bytes(&a[5]),
    };
    let module = a[0].name.strip_suffix(".luts").unwrap_or(&a[0].name);
    decode_module(&arrays).map_err(|e| Error::Module {
        path: f.file.path.clone(),
        module: module.into(),
        msg: e.to_string(),
    })
}

/// Decodes tensors into their output slices (each exactly the tensor's
/// decoded size): one task per unit, in parallel, so a DFloat11 module is
/// decoded once for all its weights asked for.
pub(crate) fn decode_members(ck: &Checkpoint, members: Vec<(Loc, &mut [u8])>, dec: &dyn Decoder) -> Result<()> {
    // (shard, unit) -> (output, its slice).
    type Outs<'o> = Vec<(usize, &'o mut [u8])>;
    let mut by_unit: BTreeMap<(usize, usize), Outs> = BTreeMap::new();
    for (loc, out) in members {
        by_unit.entry((loc.shard, loc.unit)).or_default().push((loc.output, out));
    }
    let tasks: Vec<_> = by_unit.into_iter().collect();
    tasks.into_par_iter().try_for_each(|((s, u), outs)| {
        let shard = &ck.shards[s];
        let unit = &shard.units[u];
        let path = &shard.file.path;
        for (o, out) in &outs {
            let m = &unit.outputs[*o];
            if m.num_bytes() != out.len() as u64 {
                return Err(tensor_err(
                    path,
                    &m.name,
                    format!("decodes to {} bytes, the buffer has {}", m.num_bytes(), out.len()),
                ));
            }
        }
        match &unit.payload {
            Payload::Raw(t) => {
                let bytes = shard.file.bytes(t);
                for (_, out) in outs {
                    // Differs only for a dtype of no whole byte size.
                    if bytes.len() != out.len() {
                        return Err(tensor_err(
                            path,
                            &t.name,
                            format!("stores {} bytes, the buffer has {}", bytes.len(), out.len()),
                        ));
                    }
                    out.copy_from_slice(bytes);
                }
            }
            Payload::Df11(t) => {
                for (_, out) in outs {
                    decode_df11_into(shard.file.bytes(t), out, dec).map_err(|e| tensor_err(path, &t.name, e))?;
                }
            }
            Payload::Dfloat11(a) => {
                let d = decode_dfloat11(shard, a)?;
                for (o, out) in outs {
                    let m = &unit.outputs[o];
                    let piece = d.pieces.get(o).and_then(|r| d.bits.get(r.clone()));
                    match piece {
                        Some(bits) if bits.len() * 2 == out.len() => out.copy_from_slice(&u16_to_bytes(bits)),
                        _ => return Err(tensor_err(path, &m.name, "the module decodes to a different size")),
                    }
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::pool::Pool;

    #[test]
    fn pool_hands_back_buffers_of_the_length_asked() {
        let pool = Pool::new();
        pool.give(vec![1u8; 10]);
        assert_eq!(pool.held(), 0, "no limit yet: nothing kept");
        pool.set_limit(4000);
        pool.give(vec![7u8; 1000]);
        let v = pool.take(10);
        assert_eq!(v.len(), 10);
        assert!(v.capacity() >= 1000, "the free buffer was reused");
        pool.give(v);
        let w = pool.take(2000);
        assert_eq!(w.len(), 2000, "grown past its capacity");
        assert_eq!(pool.take(5).len(), 5);
        pool.give(w);
        pool.give(vec![0; 1500]);
        pool.give(vec![0; 1500]);
        assert!(pool.held() <= 4000, "bounded: {}", pool.held());
        pool.clear();
        assert_eq!(pool.held(), 0);
        assert_eq!(pool.take(3), vec![0; 3], "a new buffer is zeroed");
        pool.give(vec![0; 3]);
        assert_eq!(pool.held(), 0, "cleared pools keep nothing");
    }
}
