//! [`TensorMap`]: named candle tensors served to a [`VarBuilder`], so model
//! code reads weights the way candle models do (`vb.pp("mlp").get(..)`)
//! whether they are views into a decoded block or ordinary tensors.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use std::collections::HashMap;

/// Named tensors as a [`SimpleBackend`]. `get` checks the shape and converts
/// the dtype and device only when they differ (a no-op for the bf16 weights
/// the model asks for).
#[derive(Clone, Default)]
pub struct TensorMap(pub HashMap<String, Tensor>);

impl TensorMap {
    /// A [`VarBuilder`] over these tensors with `dtype` and `device`.
    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }
}

impl SimpleBackend for TensorMap {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        expect_shape(self.get_unchecked(name, dtype, dev)?, &s, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.0.get(name).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() })?;
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// `t`, or an error naming the tensor when its shape is not the one the model
/// asks for (both [`SimpleBackend`]s of this module tree check alike).
pub(crate) fn expect_shape(t: Tensor, want: &Shape, name: &str) -> candle_core::Result<Tensor> {
    if t.shape() != want {
        candle_core::bail!("tensor {name}: shape {:?}, the model expects {want:?}", t.shape());
    }
    Ok(t)
}
