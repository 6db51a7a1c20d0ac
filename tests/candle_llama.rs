//! The candle model on small generated Llama, Qwen2 and Qwen3 checkpoints:
//! compressed with `df11 compress`, run with per-block decoding, and compared
//! bit for bit with the same model on the plain bf16 checkpoint.
#![cfg(feature = "candle")]

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use df11::candle::{
    BlockStore, CheckpointBackend, PlainWeights, RunArgs, WeightMode, Weights, generate, logits_identical, open_model,
    run_cli,
};
use df11::checkpoint::{Checkpoint, Kind, Storage};
use df11::synth::{SplitMix64, realistic_weights};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Llama,
    Qwen2,
    Qwen3,
}

// Larger than a block (about 180K weights), so that the CPU multiplies by a
// compressed lm_head in several pieces of the block buffer.
const VOCAB: usize = 2000;
const HIDDEN: usize = 128;
const INTER: usize = 320;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const LAYERS: usize = 8;

fn head_dim(v: Variant) -> usize {
    // Qwen3 states a head width that is not hidden / heads.
    if v == Variant::Qwen3 { 48 } else { HIDDEN / HEADS }
}

fn bits_to_bytes(bits: &[u16]) -> Vec<u8> {
    bits.iter().flat_map(|b| b.to_le_bytes()).collect()
}

/// RMSNorm gains: around 1 with some spread, as trained models have.
fn gains(n: usize, seed: u64) -> Vec<u16> {
    let mut r = SplitMix64::new(seed);
    (0..n).map(|_| half::bf16::from_f32(1.0 + 0.2 * r.gaussian() as f32).to_bits()).collect()
}

/// Writes `dir/model.safetensors` and `dir/config.json` for `v`.
fn write_model(dir: &Path, v: Variant, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let hd = head_dim(v);
    let mut m: BTreeMap<String, T> = BTreeMap::new();
    let mut n = seed;
    let mut w = |m: &mut BTreeMap<String, T>, name: String, rows: usize, cols: usize, scale: f32| {
        n += 1;
        let bits = realistic_weights(rows, cols, scale, n);
        let shape: Vec<u64> = if cols == 1 { vec![rows as u64] } else { vec![rows as u64, cols as u64] };
        m.insert(name, t("BF16", &shape, bits_to_bytes(&bits)));
    };
    w(&mut m, "model.embed_tokens.weight".into(), VOCAB, HIDDEN, 0.5);
    if v != Variant::Qwen3 {
        w(&mut m, "lm_head.weight".into(), VOCAB, HIDDEN, 0.05);
    }
    m.insert("model.norm.weight".into(), t("BF16", &[HIDDEN as u64], bits_to_bytes(&gains(HIDDEN, seed ^ 1))));
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        for (name, rows, cols, scale) in [
            ("self_attn.q_proj", HEADS * hd, HIDDEN, 0.08),
            ("self_attn.k_proj", KV_HEADS * hd, HIDDEN, 0.08),
            ("self_attn.v_proj", KV_HEADS * hd, HIDDEN, 0.05),
            ("self_attn.o_proj", HIDDEN, HEADS * hd, 0.05),
            ("mlp.gate_proj", INTER, HIDDEN, 0.06),
            ("mlp.up_proj", INTER, HIDDEN, 0.06),
            ("mlp.down_proj", HIDDEN, INTER, 0.04),
        ] {
            w(&mut m, format!("{p}.{name}.weight"), rows, cols, scale);
        }
        for name in ["input_layernorm", "post_attention_layernorm"] {
            let g = gains(HIDDEN, seed ^ (l as u64 * 7 + name.len() as u64));
            m.insert(format!("{p}.{name}.weight"), t("BF16", &[HIDDEN as u64], bits_to_bytes(&g)));
        }
        if v == Variant::Qwen2 {
            w(&mut m, format!("{p}.self_attn.q_proj.bias"), HEADS * hd, 1, 0.3);
            w(&mut m, format!("{p}.self_attn.k_proj.bias"), KV_HEADS * hd, 1, 0.3);
            w(&mut m, format!("{p}.self_attn.v_proj.bias"), KV_HEADS * hd, 1, 0.1);
        }
        if v == Variant::Qwen3 {
            for name in ["q_norm", "k_norm"] {
                let g = gains(hd, seed ^ (l as u64 * 13 + name.len() as u64));
                m.insert(format!("{p}.self_attn.{name}.weight"), t("BF16", &[hd as u64], bits_to_bytes(&g)));
            }
        }
    }
    write_st(&dir.join("model.safetensors"), &m, None);
    let mut cfg = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": false,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    });
    match v {
        Variant::Llama => {}
        Variant::Qwen2 => {
            cfg["model_type"] = json!("qwen2");
            cfg["rope_theta"] = json!(1000000.0);
            cfg["rope_scaling"] = json!(null);
        }
        Variant::Qwen3 => {
            cfg["model_type"] = json!("qwen3");
            cfg["head_dim"] = json!(hd);
            cfg["tie_word_embeddings"] = json!(true);
            cfg["rope_scaling"] = json!(null);
        }
    }
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
}

/// How the compressed copy of a test model is written.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Writer {
    /// `df11 compress`.
    Df11,
    /// `df11 compress --segment-rows N`.
    Df11Rows(u32),
    /// The DFloat11 writer (DFloat11's own format).
    Dfloat11,
}

/// A plain checkpoint and its compressed copy.
fn checkpoints_with(v: Variant, seed: u64, w: Writer) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (plain, comp) = (tmp.path().join("bf16"), tmp.path().join("compressed"));
    write_model(&plain, v, seed);
    match w {
        Writer::Df11 => {
            ok(&[&"compress", &plain, &"-o", &comp]);
        }
        Writer::Df11Rows(rows) => {
            ok(&[&"compress", &plain, &"-o", &comp, &"--segment-rows", &rows.to_string()]);
        }
        Writer::Dfloat11 => {
            let r = df11::dfloat11::write::write_checkpoint(&plain, &comp, &Default::default()).unwrap();
            assert!(r.compressed_modules >= LAYERS, "{} modules compressed", r.compressed_modules);
        }
    }
    (tmp, plain, comp)
}

/// A plain checkpoint and its `df11 compress`ed copy.
fn checkpoints(v: Variant, seed: u64) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    checkpoints_with(v, seed, Writer::Df11)
}

const PROMPT: [u32; 5] = [1, 17, 250, 3, 99];
const STEPS: usize = 6;

/// Runs both paths and asserts bit-identical logits at every step.
fn df11_matches_bf16(v: Variant, seed: u64) {
    compressed_matches_bf16(v, seed, Writer::Df11)
}

/// The same with segments of 64 rows (16,384 weights): the CPU multiplies by
/// the compressed head in several pieces of whole segments, each smaller
/// than a block. (At the default 1,024 rows the test head is one segment.)
fn df11_in_pieces_matches_bf16(v: Variant, seed: u64) {
    compressed_matches_bf16(v, seed, Writer::Df11Rows(64))
}

fn compressed_matches_bf16(v: Variant, seed: u64, w: Writer) {
    let (_tmp, plain, comp) = checkpoints_with(v, seed, w);
    let want = match w {
        Writer::Df11 | Writer::Df11Rows(_) => Kind::Df11,
        Writer::Dfloat11 => Kind::Dfloat11,
    };
    assert_eq!(Checkpoint::open(&comp).unwrap().kind(), want);
    let dev = Device::Cpu;
    let max_seq = PROMPT.len() + STEPS;
    let mut a = open_model(&comp, WeightMode::PerBlock, max_seq, &dev).unwrap();
    let bytes = a.weights().bytes();
    assert!(bytes.compressed > 0, "nothing stayed compressed");
    assert!(bytes.resident() < bytes.decoded, "resident {} >= bf16 {}", bytes.resident(), bytes.decoded);
    eprintln!("weight bytes: {bytes:?}, resident {}", bytes.resident());
    if w != Writer::Dfloat11 {
        // At most the norms (and Qwen2's biases) are held decoded, those too
        // small to gain being stored raw: the embedding matrix and lm_head
        // stay compressed.
        let norms = (2 * LAYERS + 1) * HIDDEN * 2 + if v == Variant::Qwen3 { 2 * LAYERS * head_dim(v) * 2 } else { 0 };
        let biases = if v == Variant::Qwen2 { LAYERS * (HEADS + 2 * KV_HEADS) * head_dim(v) * 2 } else { 0 };
        assert!(bytes.plain <= (norms + biases) as u64, "{} bytes held decoded", bytes.plain);
        if let Writer::Df11Rows(_) = w {
            // The buffer is one block's (f32 on the CPU), smaller than the
            // head it multiplies by in pieces.
            let src = Checkpoint::open(&comp).unwrap();
            assert_eq!(bytes.block_buffer, 4 * block_elems(&src, 0));
            assert!(bytes.block_buffer < 4 * (VOCAB * HIDDEN) as u64);
        }
        let stored = (bytes.compressed + bytes.plain) as f64 / bytes.decoded as f64;
        assert!(stored <= 0.70, "resident weights without the buffer: {stored:.4} of bf16");
    }
    let ga = generate(&mut a, &PROMPT, STEPS, true).unwrap();
    assert_eq!(ga.block_decode.1, (LAYERS * STEPS) as u64, "one decode per block per step");

    let mut b = open_model(&plain, WeightMode::Plain, max_seq, &dev).unwrap();
    assert_eq!(b.weights().bytes().compressed, 0);
    let gb = generate(&mut b, &PROMPT, STEPS, true).unwrap();

    let (la, lb) = (ga.logits.unwrap(), gb.logits.unwrap());
    assert_eq!(la.len(), STEPS);
    assert!(la.iter().all(|l| l.len() == VOCAB && l.iter().all(|x| x.is_finite())));
    // Real outputs: the logits vary across the vocabulary and across steps.
    assert!(la[0].iter().any(|&x| x != la[0][0]));
    assert_ne!(la[0], la[1]);
    assert!(logits_identical(&la, &lb), "logits differ between df11 and bf16 weights");
    assert_eq!(ga.tokens, gb.tokens);

    // A second run from a fresh cache repeats itself (the buffer reuse leaks nothing).
    let again = generate(&mut a, &PROMPT, STEPS, true).unwrap();
    assert!(logits_identical(&la, &again.logits.unwrap()));
}

#[test]
fn llama_df11_logits_are_bit_identical_to_bf16() {
    df11_matches_bf16(Variant::Llama, 10);
    df11_in_pieces_matches_bf16(Variant::Llama, 11);
}

#[test]
fn qwen2_with_biases_is_bit_identical() {
    df11_matches_bf16(Variant::Qwen2, 20);
}

#[test]
fn qwen3_with_qk_norm_and_tied_embeddings_is_bit_identical() {
    df11_matches_bf16(Variant::Qwen3, 30);
    df11_in_pieces_matches_bf16(Variant::Qwen3, 31);
}

#[test]
fn llama_from_dfloat11_is_bit_identical() {
    compressed_matches_bf16(Variant::Llama, 11, Writer::Dfloat11);
}

#[test]
fn qwen2_from_dfloat11_is_bit_identical() {
    compressed_matches_bf16(Variant::Qwen2, 21, Writer::Dfloat11);
}

#[test]
fn qwen3_from_dfloat11_is_bit_identical() {
    compressed_matches_bf16(Variant::Qwen3, 31, Writer::Dfloat11);
}

/// Every weight of a checkpoint, through candle's `VarBuilder`, as bf16 bits.
fn weights_via_backend(dir: &Path) -> BTreeMap<String, Vec<u16>> {
    let ckpt = Arc::new(Checkpoint::open(dir).unwrap());
    let names: Vec<(String, Vec<usize>)> =
        ckpt.tensors().iter().map(|t| (t.name.clone(), t.shape.iter().map(|&d| d as usize).collect())).collect();
    let vb = CheckpointBackend(ckpt).into_var_builder(DType::BF16, &Device::Cpu);
    names.into_iter().map(|(n, shape)| (n.clone(), bits(&vb.get(shape, &n).unwrap()))).collect()
}

#[test]
fn checkpoint_backend_serves_bit_exact_weights() {
    let (_tmp, plain, comp) = checkpoints(Variant::Qwen2, 80);
    let dfl = plain.parent().unwrap().join("dfloat11");
    df11::dfloat11::write::write_checkpoint(&plain, &dfl, &Default::default()).unwrap();
    let want = weights_via_backend(&plain);
    assert_eq!(want.len(), 2 + 1 + LAYERS * 12);
    let reference = PlainWeights::load(&Checkpoint::open(&plain).unwrap(), &Device::Cpu).unwrap();
    for (name, b) in &want {
        assert_eq!(b, &bits(&reference.globals().get_unchecked_dtype(name, DType::BF16).unwrap()), "{name}");
    }
    assert_eq!(weights_via_backend(&comp), want, "df11 checkpoint");
    assert_eq!(weights_via_backend(&dfl), want, "DFloat11 checkpoint");
    // Through `VarBuilder::from_backend`: prefixes, shape checks, missing tensors.
    let vb = CheckpointBackend(Arc::new(Checkpoint::open(&comp).unwrap())).into_var_builder(DType::BF16, &Device::Cpu);
    let up = vb.pp("model.layers.3.mlp").get((INTER, HIDDEN), "up_proj.weight").unwrap();
    assert_eq!(bits(&up), want["model.layers.3.mlp.up_proj.weight"]);
    assert_eq!(vb.get((INTER, HIDDEN), "model.layers.3.mlp.up_proj.weight").unwrap().dtype(), DType::BF16);
    let f32 = vb.get_unchecked_dtype("model.norm.weight", DType::F32).unwrap();
    assert_eq!(bits(&f32), want["model.norm.weight"]);
    assert!(vb.get((HIDDEN, INTER), "model.layers.3.mlp.up_proj.weight").is_err(), "wrong shape");
    assert!(vb.get(1, "model.layers.3.mlp.nothing").is_err());
    assert!(!vb.contains_tensor("model.layers.3.mlp.nothing"));
}

fn bits(t: &Tensor) -> Vec<u16> {
    // Weights from a CPU block buffer are widened to f32, which is exact.
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap()
        .to_vec1::<half::bf16>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

#[test]
fn decoded_blocks_are_views_with_the_original_bits() {
    let (_tmp, plain, comp) = checkpoints(Variant::Qwen2, 40);
    let dev = Device::Cpu;
    let src = Arc::new(Checkpoint::open(&comp).unwrap());
    assert_eq!(src.kind(), Kind::Df11);
    let mut store = BlockStore::load(src.clone(), &dev).unwrap();
    let plain_src = Checkpoint::open(&plain).unwrap();
    assert_eq!(plain_src.kind(), Kind::Plain);
    let reference = PlainWeights::load(&plain_src, &dev).unwrap();
    let per_block = src.tensors().iter().filter(|m| m.name.starts_with("model.layers.0.")).count();
    // Out of order and repeated: each decode must restore exactly its block.
    for i in [2, 0, 7, 1, 1, 2] {
        let map = store.decode_block(i).unwrap();
        assert_eq!(map.0.len(), per_block);
        let vb = reference.globals().pp(format!("model.layers.{i}"));
        for (name, t) in &map.0 {
            // The CPU block buffer is f32; raw tensors (norms too small to
            // gain from compression) are held decoded as bf16.
            let raw = matches!(src.tensor(&format!("model.layers.{i}.{name}")).unwrap().storage, Storage::Raw);
            assert_eq!(t.dtype(), if raw { DType::BF16 } else { DType::F32 }, "{name}");
            let want = vb.get_unchecked_dtype(name, DType::BF16).unwrap();
            assert_eq!(t.dims(), want.dims(), "{name}");
            assert_eq!(bits(t), bits(&want), "block {i} {name}");
        }
    }
    // The weights are views of one reused buffer, not copies: a tensor kept
    // from block 0 shows block 1's weights once block 1 is decoded.
    let kept = store.decode_block(0).unwrap().0["mlp.up_proj.weight"].clone();
    let up1 = reference.globals().get_unchecked_dtype("model.layers.1.mlp.up_proj.weight", DType::BF16).unwrap();
    assert_ne!(bits(&kept), bits(&up1));
    store.decode_block(1).unwrap();
    assert_eq!(bits(&kept), bits(&up1));
    assert!(store.decode_block(LAYERS).is_err());
    let b = store.bytes();
    // f32, no scratch; at the default segment size the test's lm_head is one
    // segment, so one piece, larger than a block.
    assert_eq!(b.block_buffer, 4 * block_elems(&src, 0).max((VOCAB * HIDDEN) as u64), "f32, no scratch");
}

/// The safetensors header's length, from the file's first 8 bytes.
fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// Elements of block `i`'s compressed tensors (tensors too small to gain
/// are stored raw and held decoded, outside the buffer).
fn block_elems(src: &Checkpoint, i: usize) -> u64 {
    let p = format!("model.layers.{i}.");
    src.tensors()
        .iter()
        .filter(|m| m.name.starts_with(&p) && !matches!(m.storage, Storage::Raw))
        .map(|m| m.num_elements())
        .sum()
}

#[test]
fn kv_cache_steps_agree_with_a_full_forward_pass() {
    let (_tmp, _plain, comp) = checkpoints(Variant::Llama, 50);
    let dev = Device::Cpu;
    let mut m = open_model(&comp, WeightMode::PerBlock, 16, &dev).unwrap();
    let g = generate(&mut m, &PROMPT, 3, true).unwrap();
    // Feed prompt + the first two generated tokens at once: the last position's
    // logits are those of step 3, computed without the cache (different matmul
    // shapes, so close rather than equal).
    let mut all = PROMPT.to_vec();
    all.extend(&g.tokens[..2]);
    m.reset();
    let full: Vec<f32> = m.forward(&all).unwrap().to_vec1().unwrap();
    let step = &g.logits.unwrap()[2];
    let scale = step.iter().fold(0f32, |a, x| a.max(x.abs()));
    let diff = full.iter().zip(step).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(diff <= 0.05 * scale, "max diff {diff}, scale {scale}");
}

#[test]
fn run_cli_reports_and_compares() {
    let (_tmp, plain, comp) = checkpoints(Variant::Qwen3, 60);
    let args = RunArgs {
        model: comp.clone(),
        prompt_tokens: Some(PROMPT.to_vec()),
        prompt: None,
        max_new_tokens: 4,
        device: "cpu".into(),
        compare_bf16: Some(plain.clone()),
    };
    let r = run_cli(&args).unwrap();
    assert_eq!(r.logits_identical, Some(true));
    assert_eq!(r.tokens.len(), 4);
    assert_eq!(r.bf16.as_ref().unwrap().tokens, r.tokens);
    assert!(r.weight_bytes_resident < r.weight_bytes_bf16);
    assert_eq!(r.block_decodes, (LAYERS * 4) as u64);
    let j = serde_json::to_value(&r).unwrap();
    for k in [
        "tokens",
        "tokens_per_s",
        "logits_identical",
        "weight_bytes_resident",
        "weight_bytes_bf16",
        "device",
        "ttft_s",
        "block_decode_s",
    ] {
        assert!(j.get(k).is_some(), "missing {k}");
    }
    // A text prompt goes through the model's tokenizer.json.
    let vocab: serde_json::Map<String, serde_json::Value> = (0..VOCAB).map(|i| (format!("t{i}"), json!(i))).collect();
    let tok = json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}});
    std::fs::write(comp.join("tokenizer.json"), tok.to_string()).unwrap();
    let t =
        run_cli(&RunArgs { prompt_tokens: None, prompt: Some("t1 t17 t250 t3 t99".into()), ..args.clone() }).unwrap();
    assert_eq!(t.prompt_tokens, PROMPT);
    assert_eq!(t.tokens, r.tokens);
    let words: Vec<String> = r.tokens.iter().map(|i| format!("t{i}")).collect();
    assert_eq!(t.text.as_deref(), Some(words.join(" ").as_str()));
    // A different model is told apart.
    let (_tmp2, other, _) = checkpoints(Variant::Qwen3, 61);
    let r = run_cli(&RunArgs { compare_bf16: Some(other), ..args.clone() }).unwrap();
    assert_eq!(r.logits_identical, Some(false));
    // Bad arguments are errors.
    assert!(run_cli(&RunArgs { prompt_tokens: None, ..args.clone() }).is_err());
    assert!(run_cli(&RunArgs { prompt_tokens: Some(vec![VOCAB as u32]), ..args.clone() }).is_err());
    assert!(run_cli(&RunArgs { device: "tpu".into(), ..args.clone() }).is_err());
    assert!(run_cli(&RunArgs { max_new_tokens: usize::MAX, ..args.clone() }).is_err());
    assert!(run_cli(&RunArgs { model: comp.join("missing"), ..args }).is_err());
}

#[test]
fn corrupt_compressed_block_is_an_error() {
    let (_tmp, _plain, comp) = checkpoints(Variant::Llama, 70);
    let f = comp.join("model.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    // Flip a bit in the middle of a block tensor's container.
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let info = &header.tensors()["model.layers.7.mlp.down_proj.weight"];
    assert_eq!(info.dtype, safetensors::Dtype::U8, "stored as a df11 container");
    let start = 8 + header_len(&bytes);
    let at = start + (info.data_offsets.0 + info.data_offsets.1) / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&f, bytes).unwrap();
    let r = Checkpoint::open(&comp).map_err(df11::candle::Error::from).and_then(|s| {
        let mut st = BlockStore::load(Arc::new(s), &Device::Cpu)?;
        for i in 0..LAYERS {
            st.decode_block(i)?;
        }
        Ok(())
    });
    assert!(r.is_err(), "a corrupt container decoded without error");
}

#[test]
fn df11_run_cli_compares_with_bf16() {
    let (_tmp, plain, comp) = checkpoints(Variant::Llama, 90);
    let out = ok(&[
        &"run",
        &comp,
        &"--prompt-tokens",
        &"1,17,250",
        &"--max-new-tokens",
        &"3",
        &"--compare-bf16",
        &plain,
        &"--json",
    ]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["logits_identical"], json!(true));
    assert_eq!(j["device"], json!("cpu"));
    assert_eq!(j["tokens"].as_array().unwrap().len(), 3);
    assert_eq!(j["bf16"]["tokens"], j["tokens"]);
    for k in ["tokens_per_s", "weight_bytes_resident", "weight_bytes_bf16", "ttft_s", "block_decode_s"] {
        assert!(j[k].is_number(), "{k}: {}", j[k]);
    }
    assert!(j["weight_bytes_resident"].as_u64() < j["weight_bytes_bf16"].as_u64());
    // Without a comparison: null; the human summary names what it measured.
    let out = ok(&[&"run", &comp, &"--prompt-tokens", &"1,17,250", &"--max-new-tokens", &"2", &"--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["logits_identical"], json!(null));
    let out = ok(&[&"run", &comp, &"--prompt-tokens", &"1,17", &"--max-new-tokens", &"2", &"--compare-bf16", &plain]);
    let text = String::from_utf8(out.stdout).unwrap();
    for k in ["tokens/s", "time to 1st token", "block decode", "weights resident", "logits identical:  yes"] {
        assert!(text.contains(k), "{k} missing from:\n{text}");
    }
    // A DFloat11 checkpoint of the same model runs the same way.
    let dfl = plain.parent().unwrap().join("dfloat11");
    df11::dfloat11::write::write_checkpoint(&plain, &dfl, &Default::default()).unwrap();
    let out = ok(&[
        &"run",
        &dfl,
        &"--prompt-tokens",
        &"1,17",
        &"--max-new-tokens",
        &"2",
        &"--compare-bf16",
        &plain,
        &"--json",
    ]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["logits_identical"], json!(true));
    assert!(j["weight_bytes"]["compressed"].as_u64() > Some(0));
    // A different model: logits differ, exit 1; bad input: a clear error.
    let (_tmp2, other, _) = checkpoints(Variant::Llama, 91);
    let err = fails(&[&"run", &comp, &"--prompt-tokens", &"1", &"--max-new-tokens", &"2", &"--compare-bf16", &other]);
    assert!(err.contains("logits differ"), "{err}");
    let err = fails(&[&"run", &comp, &"--prompt-tokens", &"100000"]);
    assert!(err.contains("vocabulary"), "{err}");
    let err = fails(&[&"run", &comp.join("missing"), &"--prompt-tokens", &"1"]);
    assert!(err.contains("missing"), "{err}");
}
