//! Decoding a checkpoint's df11 tensors with the GPU decoder ([`crate::gpu`]).
//!
//! Two ways in:
//!
//! - [`GpuHostDecoder`] is a [`Decoder`]: each tensor is decoded on the device
//!   and copied back, so every host-memory API of [`super`] (and the CLI's
//!   `--gpu`) can use the GPU.
//! - [`upload`] and [`decode_to_device`] keep the result on the device: the
//!   df11-compressed tensors of a group (say one [`super::TensorGroup`]'s
//!   compressed members) become one [`DeviceGroup`], decoded by one kernel
//!   launch into a caller-owned device buffer, tensors back to back.
//!
//! df11 containers of every layout go through the kernels; raw tensors
//! have nothing to decode and are the caller's to copy.
//!
//! This module is the checkpoint API's only dependency on the CUDA driver
//! bindings, so it can sit behind a cargo feature.

use super::Checkpoint;
use super::decode::{Decoder, parse_container};
use super::error::{Error, Result};
use crate::gpu::{DeviceGroup, GpuDecoder};
use std::sync::{Arc, Mutex};

/// A [`Decoder`] that decodes on the GPU and copies the result to host
/// memory, whatever the container's layout.
pub struct GpuHostDecoder(Mutex<GpuDecoder>);

impl GpuHostDecoder {
    /// Wraps a GPU decoder.
    pub fn new(decoder: GpuDecoder) -> Self {
        GpuHostDecoder(Mutex::new(decoder))
    }

    /// A decoder on device `ordinal` with the kernels embedded in this crate.
    /// An error, never a panic, on a machine without a usable GPU.
    pub fn on_device(ordinal: usize) -> std::result::Result<Self, crate::Error> {
        crate::gpu::decoder(ordinal).map(Self::new)
    }
}

impl Decoder for GpuHostDecoder {
    fn decode(&self, container: &[u8], out: &mut [u16]) -> std::result::Result<(), String> {
        let t = parse_container(container, out.len())?;
        let group = crate::Group { tensors: vec![t] };
        // One device: tensors are decoded one after another while the CPU
        // threads read and write the neighbouring tensors.
        let gpu = self.0.lock().map_err(|_| "GPU decoder poisoned by an earlier failure".to_string())?;
        // Decoded once: no lane index, whose walk of the codes (one
        // launch and a wait) would cost about what it saves on one decode.
        let mut on_device =
            gpu.upload_with(&group, crate::gpu::Slicing::Off).map_err(|e| format!("GPU upload: {e}"))?;
        let bits = gpu.decode(&mut on_device).map_err(|e| format!("GPU decode: {e}"))?;
        if bits.len() != out.len() {
            return Err(format!("GPU decode gave {} elements, expected {}", bits.len(), out.len()));
        }
        out.copy_from_slice(&bits);
        Ok(())
    }
}

/// Uploads the df11-compressed tensors `names` of `ckpt` as one group (in
/// that order), ready for [`decode_to_device`] or
/// [`GpuDecoder::decode_into`]. Fails, naming the tensor, if one is not a
/// df11 container.
pub fn upload(decoder: &GpuDecoder, ckpt: &Checkpoint, names: &[&str]) -> Result<DeviceGroup> {
    let group = ckpt.compressed_group(names)?;
    decoder.upload(&group).map_err(|source| Error::Gpu {
        path: ckpt.path().to_path_buf(),
        context: format!("GPU upload of {} tensors", names.len()),
        source,
    })
}

/// Decodes an uploaded group into the first `group.num_elements()` elements
/// of `out` (bf16 bits, tensors back to back) on the decoder's stream, waits,
/// and checks the kernel's error report.
pub fn decode_to_device(
    decoder: &GpuDecoder,
    ckpt: &Checkpoint,
    group: &mut DeviceGroup,
    out: &mut cudarc::driver::CudaSlice<u16>,
) -> Result<()> {
    let stream: Arc<_> = decoder.stream().clone();
    decoder.decode_checked(group, out, &stream).map_err(|source| Error::Gpu {
        path: ckpt.path().to_path_buf(),
        context: "GPU decode".into(),
        source,
    })
}
