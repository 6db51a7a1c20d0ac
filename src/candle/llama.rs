//! A Llama-family decoder (Llama, Mistral, Qwen2, Qwen3) on candle's own ops:
//! RMSNorm, rotary embeddings (with Llama 3 frequency scaling), grouped-query
//! attention with a KV cache, a SwiGLU MLP, and tied or separate embeddings.
//!
//! The maths follows the Hugging Face models (and candle-transformers'
//! ports of them). Variants are told apart by the weights present: q/k/v
//! biases (Qwen2) and per-head q/k RMSNorm (Qwen3). Activations are bf16,
//! attention scores and softmax f32. Mistral's sliding window is not applied:
//! outputs match only while the sequence fits in the window.
//!
//! Each block's forward pass first asks [`Weights::block`] for the block's
//! weights, which with a [`super::BlockStore`] decodes the block. Those may
//! be f32 (a CPU block buffer, see [`super::store`]); the model then
//! multiplies in f32 and rounds to bf16, as candle does for bf16 operands.

use super::store::Weights;
use super::{Error, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::Deserialize;

/// Positions planned for when config.json does not say (and at most).
const MAX_POSITIONS: usize = 1 << 20;

/// The keys of a Hugging Face `config.json` the model reads.
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    /// `llama`, `mistral`, `qwen2`, `qwen3`, ...
    #[serde(default)]
    pub model_type: Option<String>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of a head; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// RoPE scaling; only the `llama3` type is supported.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Longest sequence the model was trained for.
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// Whether `lm_head` is the embedding matrix (also assumed when the
    /// checkpoint has no `lm_head.weight`).
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn default_eps() -> f64 {
    1e-6
}

fn default_theta() -> f64 {
    10_000.0
}

impl Config {
    /// Parses `config.json` text and checks that the shapes are consistent.
    pub fn from_json(text: &str) -> Result<Self> {
        let c: Config = serde_json::from_str(text).map_err(|e| Error::Format(format!("config.json: {e}")))?;
        let kv = c.kv_heads();
        if c.num_attention_heads == 0 || kv == 0 || !c.num_attention_heads.is_multiple_of(kv) {
            return Err(Error::Format(format!(
                "config.json: {} attention heads are not a multiple of {kv} key/value heads",
                c.num_attention_heads
            )));
        }
        if c.head_dim() == 0 || !c.head_dim().is_multiple_of(2) {
            return Err(Error::Format(format!("config.json: head_dim {} is not a positive even number", c.head_dim())));
        }
        Ok(c)
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of a head.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Inverse frequencies of the rotary embedding, one per pair of dimensions.
    fn inv_freq(&self) -> Result<Vec<f32>> {
        let hd = self.head_dim();
        let base: Vec<f32> =
            (0..hd).step_by(2).map(|i| 1.0 / (self.rope_theta as f32).powf(i as f32 / hd as f32)).collect();
        let Some(s) = &self.rope_scaling else { return Ok(base) };
        let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
        match kind {
            "default" => Ok(base),
            "llama3" => {
                let num = |k: &str| {
                    s.get(k)
                        .and_then(|v| v.as_f64())
                        .ok_or_else(|| Error::Format(format!("config.json: rope_scaling.{k} is missing")))
                };
                let (factor, low, high) =
                    (num("factor")? as f32, num("low_freq_factor")? as f32, num("high_freq_factor")? as f32);
                let orig = num("original_max_position_embeddings")? as f32;
                let (low_wavelen, high_wavelen) = (orig / low, orig / high);
                Ok(base
                    .into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (orig / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect())
            }
            other => Err(Error::Format(format!("config.json: rope_scaling type {other} is not supported"))),
        }
    }
}

/// The model's state: configuration, non-block weights, rotary tables and KV cache.
pub struct Model {
    cfg: Config,
    weights: Box<dyn Weights>,
    norm: Tensor,
    cos: Tensor,
    sin: Tensor,
    cache: Vec<Option<(Tensor, Tensor)>>,
    pos: usize,
    device: Device,
}

impl Model {
    /// A model over `weights` for sequences of up to `max_seq` tokens.
    pub fn new(cfg: Config, weights: Box<dyn Weights>, max_seq: usize, device: &Device) -> Result<Self> {
        if weights.num_blocks() != cfg.num_hidden_layers {
            return Err(Error::Format(format!(
                "config.json says {} layers, the weights have {} blocks",
                cfg.num_hidden_layers,
                weights.num_blocks()
            )));
        }
        // Bounds the rotary tables and the KV cache this plans for.
        let limit = cfg.max_position_embeddings.unwrap_or(MAX_POSITIONS).min(MAX_POSITIONS);
        if max_seq > limit {
            return Err(Error::Format(format!("a sequence of {max_seq} tokens is longer than the model's {limit}")));
        }
        let g = weights.globals();
        let h = cfg.hidden_size;
        // The embedding matrix and lm_head (the same one when the checkpoint
        // has no lm_head) are the weights' to serve: they may stay compressed.
        if weights.vocab_hidden() != (cfg.vocab_size, h) {
            return Err(Error::Format(format!(
                "the embedding matrix is {:?}, config.json says [{}, {h}]",
                weights.vocab_hidden(),
                cfg.vocab_size
            )));
        }
        let norm = g.get(h, "model.norm.weight")?;
        let inv = cfg.inv_freq()?;
        let half = inv.len();
        let inv = Tensor::from_vec(inv, (1, half), device)?;
        let t =
            Tensor::arange(0u32, max_seq.max(1) as u32, device)?.to_dtype(DType::F32)?.reshape((max_seq.max(1), 1))?;
        let freqs = t.matmul(&inv)?;
        let cos = freqs.cos()?.to_dtype(DType::BF16)?;
        let sin = freqs.sin()?.to_dtype(DType::BF16)?;
        let n = cfg.num_hidden_layers;
        Ok(Model { cfg, weights, norm, cos, sin, cache: vec![None; n], pos: 0, device: device.clone() })
    }

    /// The weights.
    pub fn weights(&self) -> &dyn Weights {
        self.weights.as_ref()
    }

    /// Positions processed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Clears the KV cache.
    pub fn reset(&mut self) {
        self.cache.iter_mut().for_each(|c| *c = None);
        self.pos = 0;
    }

    /// Feeds `tokens` (the prompt, then one token per step) and returns the
    /// logits of the last one as f32 (`[vocab]`).
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Tensor> {
        let seq = tokens.len();
        if seq == 0 {
            return Err(Error::Format("no tokens to feed".into()));
        }
        if self.pos + seq > self.cos.dim(0)? {
            return Err(Error::Format(format!("sequence longer than the {} positions planned", self.cos.dim(0)?)));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(Error::Format(format!("token {t} is outside the vocabulary of {}", self.cfg.vocab_size)));
        }
        let mut x = self.weights.embed(tokens)?.unsqueeze(0)?;
        let step = Step {
            cos: self.cos.narrow(0, self.pos, seq)?,
            sin: self.sin.narrow(0, self.pos, seq)?,
            mask: self.mask(seq)?,
        };
        for i in 0..self.cfg.num_hidden_layers {
            let vb = self.weights.block(i)?;
            x = self.block(i, &vb, &x, &step)?;
        }
        self.pos += seq;
        let x =
            candle_nn::ops::rms_norm(&x.narrow(1, seq - 1, 1)?.squeeze(1)?, &self.norm, self.cfg.rms_norm_eps as f32)?;
        let logits = self.weights.lm_head(&x)?;
        Ok(logits.squeeze(0)?.to_dtype(DType::F32)?)
    }

    /// The causal mask for `seq` new positions after `self.pos` cached ones
    /// (`None` for a single token, which sees everything).
    fn mask(&self, seq: usize) -> Result<Option<Tensor>> {
        if seq == 1 {
            return Ok(None);
        }
        let total = self.pos + seq;
        let m: Vec<f32> = (0..seq)
            .flat_map(|i| (0..total).map(move |j| if j > self.pos + i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        Ok(Some(Tensor::from_vec(m, (seq, total), &self.device)?))
    }

    fn block(&mut self, i: usize, vb: &VarBuilder, x: &Tensor, step: &Step) -> Result<Tensor> {
        let eps = self.cfg.rms_norm_eps as f32;
        let h = self.cfg.hidden_size;
        let ln1 = vb.get(h, "input_layernorm.weight")?.to_dtype(DType::BF16)?;
        let attn = self.attention(i, &vb.pp("self_attn"), &candle_nn::ops::rms_norm(x, &ln1, eps)?, step)?;
        let x = (x + attn)?;
        let ln2 = vb.get(h, "post_attention_layernorm.weight")?.to_dtype(DType::BF16)?;
        let mlp = Self::mlp(&self.cfg, &vb.pp("mlp"), &candle_nn::ops::rms_norm(&x, &ln2, eps)?)?;
        Ok((x + mlp)?)
    }

    fn linear(vb: &VarBuilder, name: &str, out: usize, inp: usize) -> Result<Lin> {
        let w = vb.get((out, inp), &format!("{name}.weight"))?;
        let b = if vb.contains_tensor(&format!("{name}.bias")) {
            Some(vb.get(out, &format!("{name}.bias"))?)
        } else {
            None
        };
        Ok(Lin { w, b })
    }

    fn mlp(cfg: &Config, vb: &VarBuilder, x: &Tensor) -> Result<Tensor> {
        let (h, m) = (cfg.hidden_size, cfg.intermediate_size);
        let gate = Self::linear(vb, "gate_proj", m, h)?.forward(x)?;
        let up = Self::linear(vb, "up_proj", m, h)?.forward(x)?;
        Self::linear(vb, "down_proj", h, m)?.forward(&(candle_nn::ops::silu(&gate)? * up)?)
    }

    fn attention(&mut self, i: usize, vb: &VarBuilder, x: &Tensor, step: &Step) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, seq, h) = x.dims3()?;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let q = Self::linear(vb, "q_proj", nh * hd, h)?.forward(x)?;
        let k = Self::linear(vb, "k_proj", nkv * hd, h)?.forward(x)?;
        let v = Self::linear(vb, "v_proj", nkv * hd, h)?.forward(x)?;
        let heads = |t: Tensor, n: usize| -> Result<Tensor> { Ok(t.reshape((b, seq, n, hd))?.transpose(1, 2)?) };
        let (mut q, mut k, v) = (heads(q, nh)?, heads(k, nkv)?, heads(v, nkv)?.contiguous()?);
        let eps = cfg.rms_norm_eps as f32;
        // Qwen3: RMSNorm over each head's vector before the rotation.
        if vb.contains_tensor("q_norm.weight") {
            q = candle_nn::ops::rms_norm(&q.contiguous()?, &vb.get(hd, "q_norm.weight")?.to_dtype(DType::BF16)?, eps)?;
            k = candle_nn::ops::rms_norm(&k.contiguous()?, &vb.get(hd, "k_norm.weight")?.to_dtype(DType::BF16)?, eps)?;
        }
        let q = candle_nn::rotary_emb::rope(&q.contiguous()?, &step.cos, &step.sin)?;
        let k = candle_nn::rotary_emb::rope(&k.contiguous()?, &step.cos, &step.sin)?;
        let (k, v) = match self.cache[i].take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        self.cache[i] = Some((k.clone(), v.clone()));
        let rep = nh / nkv;
        let repeat = |t: &Tensor| -> Result<Tensor> {
            if rep == 1 {
                return Ok(t.clone());
            }
            let (b, n, s, d) = t.dims4()?;
            Ok(Tensor::cat(&vec![t; rep], 2)?.reshape((b, n * rep, s, d))?)
        };
        let (k, v) = (repeat(&k)?, repeat(&v)?);
        let q = q.to_dtype(DType::F32)?;
        let k = k.to_dtype(DType::F32)?;
        let v = v.to_dtype(DType::F32)?;
        let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        let att = match &step.mask {
            Some(m) => att.broadcast_add(m)?,
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v.contiguous()?)?.to_dtype(DType::BF16)?;
        let y = y.transpose(1, 2)?.reshape((b, seq, nh * hd))?;
        Self::linear(vb, "o_proj", h, nh * hd)?.forward(&y)
    }
}

/// A linear layer whose weight may be f32 (a CPU block buffer) while the
/// activations are bf16: then it multiplies in f32 and rounds to bf16, which
/// is exactly what candle's CPU matmul does for two bf16 operands.
struct Lin {
    w: Tensor,
    b: Option<Tensor>,
}

impl Lin {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dt = x.dtype();
        let y = linear(&self.w, x)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(&b.to_dtype(dt)?)?,
            None => y,
        })
    }
}

/// `x · wᵀ` in `x`'s dtype, for a weight `w` in bf16 or (a CPU block
/// buffer) f32; see [`Lin`].
pub(super) fn linear(w: &Tensor, x: &Tensor) -> Result<Tensor> {
    let dt = x.dtype();
    let mm = Linear::new(w.clone(), None);
    Ok(if w.dtype() == dt { mm.forward(x)? } else { mm.forward(&x.to_dtype(w.dtype())?)?.to_dtype(dt)? })
}

/// What every block of one forward step shares: the rotary tables of the
/// step's positions and the causal mask (none for a single new token).
struct Step {
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
}

/// Index of the largest logit (the first one on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i as u32)
}
