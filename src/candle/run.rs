//! Greedy generation with timings and weight memory, a bit-for-bit comparison
//! against the same model with plain bf16 weights, and [`run_cli`], the body
//! of `df11 run`.

use super::llama::{Config, Model, argmax};
use super::source::open_checkpoint;
use super::store::{BlockStore, PlainWeights, WeightBytes, Weights};
use super::{Error, Result};
use candle_core::Device;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The result of [`generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    /// Generated tokens (not including the prompt).
    pub tokens: Vec<u32>,
    /// From the start to the first generated token (the prompt's forward pass).
    pub ttft: Duration,
    /// The whole generation.
    pub total: Duration,
    /// Time spent decoding blocks during the generation, and the number of
    /// block decodes (0 for plain weights).
    pub block_decode: (Duration, u64),
    /// The logits of every step (`[steps][vocab]`), if asked for.
    pub logits: Option<Vec<Vec<f32>>>,
}

impl Generation {
    /// Generated tokens per second after the first one (the decode phase);
    /// for a single token, that token over the time to first token.
    pub fn tokens_per_s(&self) -> f64 {
        let (n, t) = if self.tokens.len() > 1 {
            (self.tokens.len() - 1, self.total.saturating_sub(self.ttft))
        } else {
            (self.tokens.len(), self.ttft)
        };
        n as f64 / t.as_secs_f64().max(1e-12)
    }

    /// Mean time of one block decode, in seconds (0 without decodes).
    pub fn block_decode_s(&self) -> f64 {
        let (t, n) = self.block_decode;
        if n == 0 { 0.0 } else { t.as_secs_f64() / n as f64 }
    }
}

/// Greedy generation of `max_new_tokens` tokens after `prompt`, from a fresh
/// KV cache; with `keep_logits`, every step's logits are returned.
pub fn generate(model: &mut Model, prompt: &[u32], max_new_tokens: usize, keep_logits: bool) -> Result<Generation> {
    model.reset();
    let (t0, n0) = model.weights().decode_time();
    let start = Instant::now();
    let mut ttft = Duration::ZERO;
    let mut tokens = Vec::new();
    let mut all = keep_logits.then(Vec::new);
    let mut input = prompt.to_vec();
    for step in 0..max_new_tokens {
        let logits: Vec<f32> = model.forward(&input)?.to_vec1()?;
        let next = argmax(&logits).ok_or_else(|| Error::Format("the logits are all NaN".into()))?;
        if step == 0 {
            ttft = start.elapsed();
        }
        if let Some(a) = &mut all {
            a.push(logits);
        }
        tokens.push(next);
        input = vec![next];
    }
    let total = start.elapsed();
    let (t1, n1) = model.weights().decode_time();
    Ok(Generation { tokens, ttft, total, block_decode: (t1.saturating_sub(t0), n1 - n0), logits: all })
}

/// Whether two runs' logits are the same bits at every step.
pub fn logits_identical(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()))
}

/// Reads `dir/config.json`.
pub fn read_config(dir: &Path) -> Result<Config> {
    let p = dir.join("config.json");
    Config::from_json(&std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?)
}

/// Which weights to build a model on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightMode {
    /// Compressed blocks (df11 or DFloat11) stay compressed and are decoded
    /// per block ([`BlockStore`]); a checkpoint without compressed tensors
    /// holds everything decoded anyway.
    PerBlock,
    /// Every tensor decoded at load ([`PlainWeights`]).
    Plain,
}

/// Opens a checkpoint directory (config.json and safetensors files: df11,
/// plain or DFloat11) as a model for sequences of up to `max_seq` tokens.
pub fn open_model(dir: &Path, mode: WeightMode, max_seq: usize, device: &Device) -> Result<Model> {
    let cfg = read_config(dir)?;
    let ckpt = open_checkpoint(dir)?;
    let weights: Box<dyn Weights> = match mode {
        WeightMode::PerBlock => Box::new(BlockStore::load(Arc::new(ckpt), device)?),
        WeightMode::Plain => Box::new(PlainWeights::load(&ckpt, device)?),
    };
    Model::new(cfg, weights, max_seq, device)
}

/// The arguments of `df11 run`.
#[derive(Clone, Debug)]
pub struct RunArgs {
    /// Checkpoint directory (df11, plain or DFloat11), with config.json.
    pub model: PathBuf,
    /// Prompt as token ids (`--prompt-tokens 1,2,3`).
    pub prompt_tokens: Option<Vec<u32>>,
    /// Prompt as text, tokenized with the model's tokenizer.json (`--prompt`).
    pub prompt: Option<String>,
    /// Tokens to generate.
    pub max_new_tokens: usize,
    /// `cpu` or `cuda` (device 0).
    pub device: String,
    /// A directory with the same model in plain bf16, to compare logits with.
    pub compare_bf16: Option<PathBuf>,
}

/// Timings and memory of the bf16 comparison run.
#[derive(Clone, Debug, Serialize)]
pub struct Bf16Run {
    /// Generated tokens.
    pub tokens: Vec<u32>,
    /// Decode-phase tokens per second.
    pub tokens_per_s: f64,
    /// Time to first token, seconds.
    pub ttft_s: f64,
    /// Weight bytes it held.
    pub weight_bytes_resident: u64,
}

/// What `df11 run` reports (`--json` prints it as is).
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// `cpu` or `cuda`.
    pub device: String,
    /// The prompt's token ids.
    pub prompt_tokens: Vec<u32>,
    /// Generated token ids.
    pub tokens: Vec<u32>,
    /// The generated tokens as text, when the prompt was text.
    pub text: Option<String>,
    /// Decode-phase tokens per second (see [`Generation::tokens_per_s`]).
    pub tokens_per_s: f64,
    /// Time to first token, seconds.
    pub ttft_s: f64,
    /// Mean time of one block decode, seconds (on CUDA, the launch only:
    /// the decode runs asynchronously on the stream).
    pub block_decode_s: f64,
    /// Block decodes during the run (blocks × steps).
    pub block_decodes: u64,
    /// Peak weight bytes held: compressed blocks + one block buffer + decoded
    /// non-block weights.
    pub weight_bytes_resident: u64,
    /// Bytes of all weights decoded (bf16).
    pub weight_bytes_bf16: u64,
    /// The parts of `weight_bytes_resident`.
    pub weight_bytes: WeightBytes,
    /// With `--compare-bf16`: whether every logit of every step has the same
    /// bits in both runs; `None` without it.
    pub logits_identical: Option<bool>,
    /// With `--compare-bf16`: the bf16 run.
    pub bf16: Option<Bf16Run>,
}

fn device_of(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        other => Err(Error::Format(format!("unknown device {other} (cpu or cuda)"))),
    }
}

/// `df11 run`: generates from the model in `args.model`, keeping df11 blocks
/// compressed, and with `compare_bf16` runs the plain model too and compares
/// the logits bit for bit.
pub fn run_cli(args: &RunArgs) -> Result<RunReport> {
    let device = device_of(&args.device)?;
    let tokenizer = match &args.prompt {
        Some(_) => {
            let p = args.model.join("tokenizer.json");
            Some(tokenizers::Tokenizer::from_file(&p).map_err(|e| Error::Tokenizer(format!("{}: {e}", p.display())))?)
        }
        None => None,
    };
    let prompt: Vec<u32> = match (&args.prompt_tokens, &args.prompt, &tokenizer) {
        (Some(t), None, _) => t.clone(),
        (None, Some(text), Some(tok)) => {
            tok.encode(text.as_str(), true).map_err(|e| Error::Tokenizer(e.to_string()))?.get_ids().to_vec()
        }
        _ => return Err(Error::Format("give exactly one of --prompt-tokens and --prompt".into())),
    };
    if prompt.is_empty() {
        return Err(Error::Format("the prompt has no tokens".into()));
    }
    let max_seq = prompt.len().saturating_add(args.max_new_tokens);
    let compare = args.compare_bf16.is_some();
    let mut model = open_model(&args.model, WeightMode::PerBlock, max_seq, &device)?;
    let g = generate(&mut model, &prompt, args.max_new_tokens, compare)?;
    let bytes = model.weights().bytes();
    drop(model);
    let (logits_identical, bf16) = match &args.compare_bf16 {
        Some(dir) => {
            let mut plain = open_model(dir, WeightMode::Plain, max_seq, &device)?;
            let p = generate(&mut plain, &prompt, args.max_new_tokens, true)?;
            let same = logits_identical(g.logits.as_deref().unwrap_or(&[]), p.logits.as_deref().unwrap_or(&[]));
            let run = Bf16Run {
                tokens_per_s: p.tokens_per_s(),
                ttft_s: p.ttft.as_secs_f64(),
                weight_bytes_resident: plain.weights().bytes().resident(),
                tokens: p.tokens,
            };
            (Some(same), Some(run))
        }
        None => (None, None),
    };
    let text = match &tokenizer {
        Some(t) => Some(t.decode(&g.tokens, true).map_err(|e| Error::Tokenizer(e.to_string()))?),
        None => None,
    };
    Ok(RunReport {
        device: args.device.clone(),
        prompt_tokens: prompt,
        tokens_per_s: g.tokens_per_s(),
        ttft_s: g.ttft.as_secs_f64(),
        block_decode_s: g.block_decode_s(),
        block_decodes: g.block_decode.1,
        weight_bytes_resident: bytes.resident(),
        weight_bytes_bf16: bytes.decoded,
        weight_bytes: bytes,
        logits_identical,
        bf16,
        text,
        tokens: g.tokens,
    })
}
