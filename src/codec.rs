//! The one place where the CLI meets the codec: compressing a BF16 tensor to a
//! df11 container and decoding it back. A GPU decoder plugs in at
//! [`decoder`]; everything else in the CLI only sees [`Decoder`].

use std::borrow::Cow;

/// Decodes df11 containers.
pub trait Decoder: Sync {
    /// Decodes a single-tensor container into `out` (one `u16` per element).
    fn decode(&self, container: &[u8], out: &mut [u16]) -> Result<(), String>;
}

/// The CPU decoder from `df11-host`.
pub struct CpuDecoder;

impl Decoder for CpuDecoder {
    fn decode(&self, container: &[u8], out: &mut [u16]) -> Result<(), String> {
        let t = df11::CompressedTensor::from_bytes(container).map_err(|e| e.to_string())?;
        if t.num_elements != out.len() as u64 {
            return Err(format!("container holds {} elements, the tensor's shape needs {}", t.num_elements, out.len()));
        }
        df11::decompress_into(&t, bytemuck::cast_slice_mut(out)).map_err(|e| e.to_string())
    }
}

/// The GPU decoder from `df11::gpu` on device 0.
pub struct GpuDecoder(std::sync::Mutex<df11::gpu::GpuDecoder>);

impl Decoder for GpuDecoder {
    fn decode(&self, container: &[u8], out: &mut [u16]) -> Result<(), String> {
        let t = df11::CompressedTensor::from_bytes(container).map_err(|e| e.to_string())?;
        if t.num_elements != out.len() as u64 {
            return Err(format!("container holds {} elements, the tensor's shape needs {}", t.num_elements, out.len()));
        }
        if t.layout != df11::Layout::Warp {
            // The kernel reads the warp layout only; the lanes layout is the
            // CPU's, and decodes fast there.
            return df11::decompress_into(&t, bytemuck::cast_slice_mut(out)).map_err(|e| e.to_string());
        }
        let group = df11::Group { tensors: vec![t] };
        // One device: tensors are decoded one after another while the CPU
        // threads read and write the neighbouring tensors.
        let gpu = self.0.lock().map_err(|_| "GPU decoder poisoned by an earlier failure".to_string())?;
        let mut on_device = gpu.upload(&group).map_err(|e| format!("GPU upload: {e}"))?;
        let bits = gpu.decode(&mut on_device).map_err(|e| format!("GPU decode: {e}"))?;
        out.copy_from_slice(&bits);
        Ok(())
    }
}

/// The decoder selected on the command line: the CPU one, or with `gpu` the
/// GPU one on device 0 (an error if this machine has no usable GPU).
pub fn decoder(gpu: bool) -> Result<Box<dyn Decoder>, String> {
    if gpu {
        let d = df11::gpu::decoder(0).map_err(|e| format!("--gpu: cannot start the GPU decoder: {e}"))?;
        return Ok(Box::new(GpuDecoder(std::sync::Mutex::new(d))));
    }
    Ok(Box::new(CpuDecoder))
}

/// Compresses BF16 bits into a single-tensor df11 container.
pub fn compress(bits: &[u16], opts: &df11::EncodeOptions) -> Vec<u8> {
    df11::compress_with(bits, opts).to_bytes()
}

/// The entropy bound `8 + H(exponent)` in bits per weight.
pub fn bound_bits_per_weight(bits: &[u16]) -> f64 {
    df11::stats::bound_bits_per_weight(bits)
}

/// The version field of a container, if the bytes start like one.
pub fn container_version(container: &[u8]) -> Option<u16> {
    (container.len() >= 6 && &container[..4] == b"DF11").then(|| u16::from_le_bytes([container[4], container[5]]))
}

/// The layout of a single-tensor container's record, if the bytes go that far
/// and name one.
pub fn container_layout(container: &[u8]) -> Option<df11::Layout> {
    let at = df11::format::CONTAINER_HEADER_BYTES + df11::format::RECORD_LAYOUT_BYTE;
    container.get(at).copied().and_then(df11::Layout::from_code)
}

/// Views little-endian 16-bit data as `u16`s, copying only if it is unaligned
/// (safetensors data offsets are not guaranteed to be even) or the host is big-endian.
pub fn bytes_to_u16(bytes: &[u8]) -> Cow<'_, [u16]> {
    if cfg!(target_endian = "little")
        && let Ok(v) = bytemuck::try_cast_slice(bytes)
    {
        return Cow::Borrowed(v);
    }
    Cow::Owned(bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
}

/// The little-endian bytes of `u16`s (a view on little-endian hosts).
pub fn u16_to_bytes(v: &[u16]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(v))
    } else {
        Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}
