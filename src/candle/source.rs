//! Weights from a [`Checkpoint`]: df11, plain safetensors or DFloat11 (file
//! or sharded directory), read through the library's one safetensors parser.
//!
//! [`CheckpointBackend`] serves a checkpoint's tensors to candle as a
//! [`SimpleBackend`], so `VarBuilder::from_backend` loads any candle model
//! from a compressed checkpoint: each tensor is decoded on the CPU when it is
//! asked for (bit-exact) and then moved to the requested device and dtype.
//! [`load_tensor`] is the same for one tensor.

use super::backend::expect_shape;
use super::{Error, Result};
use crate::checkpoint::{Checkpoint, TensorEntry};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use std::path::Path;
use std::sync::Arc;

/// The candle dtype of a safetensors dtype name, if candle has one.
pub fn dtype_of(name: &str) -> Option<DType> {
    Some(match name {
        "BF16" => DType::BF16,
        "F16" => DType::F16,
        "F32" => DType::F32,
        "F64" => DType::F64,
        "U8" => DType::U8,
        "U32" => DType::U32,
        "I64" => DType::I64,
        _ => return None,
    })
}

/// A tensor's candle dtype and shape, or an error naming it.
pub(super) fn dtype_shape(t: &TensorEntry) -> Result<(DType, Vec<usize>)> {
    let dtype = dtype_of(&t.dtype)
        .ok_or_else(|| Error::Format(format!("tensor {}: dtype {} is not supported", t.name, t.dtype)))?;
    let shape = t
        .shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| Error::Format(format!("tensor {}: shape {:?} is too large", t.name, t.shape)))?;
    Ok((dtype, shape))
}

/// Opens a checkpoint (file or directory) for the model.
pub fn open_checkpoint(path: &Path) -> Result<Checkpoint> {
    Ok(Checkpoint::open(path)?)
}

/// Decodes tensor `name` of `ckpt` on the CPU into a tensor on `device`, with
/// its stored dtype and shape.
pub fn load_tensor(ckpt: &Checkpoint, name: &str, device: &Device) -> Result<Tensor> {
    let t = ckpt.tensor(name).ok_or_else(|| Error::Format(format!("no tensor {name}")))?;
    let (dtype, shape) = dtype_shape(&t)?;
    let bytes = ckpt.decode(name)?;
    Ok(Tensor::from_raw_buffer(&bytes, dtype, &shape, device)?)
}

/// A checkpoint as a candle [`SimpleBackend`]: every `get` decodes the tensor
/// (on the CPU; on CUDA the result is copied to the device), checks its
/// shape and converts it to the requested dtype. Nothing is cached, so memory
/// holds what the model keeps; models that keep every weight want this once
/// at load.
#[derive(Clone)]
pub struct CheckpointBackend(pub Arc<Checkpoint>);

impl CheckpointBackend {
    /// A [`VarBuilder`] over the checkpoint with `dtype` and `device`.
    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }
}

fn candle_err(e: Error) -> candle_core::Error {
    candle_core::Error::msg(e.to_string())
}

impl SimpleBackend for CheckpointBackend {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        expect_shape(self.get_unchecked(name, dtype, dev)?, &s, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if !self.contains_tensor(name) {
            return Err(candle_core::Error::CannotFindTensor { path: name.to_string() });
        }
        load_tensor(&self.0, name, &Device::Cpu).map_err(candle_err)?.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.tensor(name).is_some()
    }
}
