//! Writing DFloat11: every encoded module must decode bit-exactly through
//! df11's DFloat11 reader (`decode_module`), within DFloat11's kernel limits,
//! and whole checkpoint directories must read back through `df11 verify`.

mod common;

use common::*;
use df11::dfloat11::code::{Code, MAX_SUBTABLES};
use df11::dfloat11::decode_module;
use df11::dfloat11::patterns::PatternDict;
use df11::dfloat11::write::{
    EncodeError, EncodedModule, Unencodable, Weight, WriteError, WriteOptions, encode_module, write_checkpoint,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const BLOCK_BITS: u64 = 32768;

/// Encodes, checks the kernel limits and the array shapes, decodes, compares.
fn round_trip(weights: &[(&str, Vec<u16>)]) -> EncodedModule {
    let ws: Vec<Weight> = weights.iter().map(|(n, b)| Weight { name: n, bits: b }).collect();
    let e = encode_module(&ws).unwrap();
    let rows = e.luts.len() / 256;
    assert!(e.luts.len().is_multiple_of(256) && (2..=MAX_SUBTABLES + 2).contains(&rows), "{rows} LUT rows");
    assert!(e.luts[..(rows - 1) * 256].iter().all(|&v| v < 240 || 256 - v as usize <= rows - 2), "dangling pointer");
    assert!(e.luts[(rows - 1) * 256..].iter().all(|&l| l <= 32));
    let n: usize = weights.iter().map(|w| w.1.len()).sum();
    let n_blocks = e.encoded_exponent.len().div_ceil(4096);
    assert_eq!(e.sign_mantissa.len(), n);
    assert_eq!(e.gaps.len(), 320 * n_blocks);
    assert_eq!(e.output_positions.len(), 4 * (n_blocks + 1));
    assert_eq!(e.split_positions.len(), 8 * (weights.len().max(1) - 1));
    let d = decode_module(&e.arrays()).unwrap();
    let all: Vec<u16> = weights.iter().flat_map(|w| w.1.iter().copied()).collect();
    // The per-thread layout the CUDA kernel relies on (decode_module only
    // reads each block's first gap): every window's gap is the offset of the
    // first code starting in it, every block's position the first element
    // whose code starts in it (FORMAT.md §6), found here by walking the codes.
    let lens = &e.luts[(rows - 1) * 256..];
    let (mut gaps, mut pos) = (vec![None; 512 * n_blocks], vec![None; n_blocks + 1]);
    let mut p = 0u64;
    for (i, &b) in all.iter().enumerate() {
        gaps[(p / 64) as usize].get_or_insert(p % 64);
        pos[(p / BLOCK_BITS) as usize].get_or_insert(i as u32);
        p += lens[(b >> 7 & 0xFF) as usize] as u64;
    }
    assert_eq!(p.div_ceil(8), e.encoded_exponent.len() as u64);
    for (t, want) in gaps.iter().enumerate() {
        let bit = 5 * t;
        let pair = u16::from_be_bytes([e.gaps[bit / 8], e.gaps.get(bit / 8 + 1).copied().unwrap_or(0)]);
        assert_eq!((pair >> (11 - bit % 8)) as u64 & 31, want.unwrap_or(0), "gap of window {t}");
    }
    let stored: Vec<u32> = e.output_positions.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    let want: Vec<u32> = pos.iter().map(|p| p.unwrap_or(n as u32)).collect();
    assert_eq!(stored, want, "output_positions");
    assert!(d.bits == all, "bits differ");
    assert_eq!(d.pieces.len(), weights.len().max(1));
    for (p, w) in d.pieces.iter().zip(weights) {
        assert_eq!(p.len(), w.1.len());
    }
    e
}

/// A fixture's reference weights (in concatenation order) and its JSON.
/// (name, shape, bf16 bits) of one weight.
type FixtureWeight = (String, Vec<u64>, Vec<u16>);

fn fixture(case: &str) -> (Vec<FixtureWeight>, Value) {
    let j = dfloat11_case_json(case);
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), dfloat11_fixture_bytes(&format!("{case}.bf16.safetensors"))).unwrap();
    let path = tmp.path().to_path_buf();
    let (tensors, _) = read_st(&path);
    let weights = j["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let name = w["name"].as_str().unwrap().to_string();
            let t = &tensors[&name];
            let bits = t.data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            (name, serde_json::from_value(w["shape"].clone()).unwrap(), bits)
        })
        .collect();
    (weights, j)
}

#[test]
fn fixture_originals_round_trip() {
    for case in DFLOAT11_CASES {
        let (weights, j) = fixture(case);
        let w: Vec<(&str, Vec<u16>)> = weights.iter().map(|(n, _, b)| (n.as_str(), b.clone())).collect();
        let e = round_trip(&w);
        // Never worse than DFloat11's own (unconstrained Huffman plus EOF) stream.
        let theirs = j["stats"]["encoded_exponent_bytes"].as_u64().unwrap();
        assert!(e.encoded_exponent.len() as u64 <= theirs, "{case}: {} > {theirs} bytes", e.encoded_exponent.len());
        assert_eq!(
            e.split_positions.chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>(),
            serde_json::from_value::<Vec<i64>>(j["split_positions"].clone()).unwrap(),
            "{case}"
        );
    }
}

#[test]
fn empty_and_tiny_modules() {
    round_trip(&[]);
    round_trip(&[("a", vec![])]);
    round_trip(&[("a", vec![]), ("b", vec![])]);
    round_trip(&[("a", vec![0x3F80])]);
    round_trip(&[("a", vec![]), ("b", vec![0x3F80, 0xBF80]), ("c", vec![])]);
    for n in [2usize, 7, 8, 9, 63, 64, 65] {
        let bits: Vec<u16> = (0..n as u16).map(|i| 0x3C00 + i * 0x81).collect();
        round_trip(&[("a", bits.clone()), ("b", bits)]);
    }
    // One symbol only: a 1-bit code, an all-zero stream.
    let e = round_trip(&[("a", vec![0x4000; 40_000])]);
    assert_eq!(e.encoded_exponent.len(), 5000);
}

#[test]
fn every_encodable_bit_pattern() {
    let all: Vec<u16> = (0..=u16::MAX).filter(|&b| ((b >> 7) as u8) < 240).collect();
    assert_eq!(all.len(), 65536 - 2 * 16 * 128);
    let mut shuffled = all.clone();
    let mut s = 7u64;
    for i in (1..shuffled.len()).rev() {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        shuffled.swap(i, (s >> 33) as usize % (i + 1));
    }
    round_trip(&[("sorted", all), ("shuffled", shuffled)]);
}

#[test]
fn unencodable_exponents_are_refused_with_the_tensor_name() {
    for e in 240u16..=255 {
        for sign in [0u16, 0x8000] {
            let mut bad = vec![0x3F80u16; 100];
            bad[37] = sign | e << 7 | 5;
            let ok = vec![0x3F80u16; 10];
            let ws = [Weight { name: "fine", bits: &ok }, Weight { name: "layer.bad.weight", bits: &bad }];
            match encode_module(&ws) {
                Err(err @ EncodeError::Unencodable { .. }) => {
                    let EncodeError::Unencodable { ref tensor, index, exponent } = err else { unreachable!() };
                    assert_eq!((tensor.as_str(), index, exponent), ("layer.bad.weight", 37, e as u8));
                    assert!(err.to_string().contains("layer.bad.weight"));
                }
                other => panic!("exponent {e}: {other:?}"),
            }
        }
    }
}

/// Data with exactly `counts[s]` elements of exponent `s`, in a seeded order.
fn data_for(counts: &[(u8, usize)], seed: u64) -> Vec<u16> {
    let mut v: Vec<u16> = Vec::new();
    let mut s = seed;
    for &(e, c) in counts {
        for _ in 0..c {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            v.push(((s >> 40) as u16 & 0x807F) | (e as u16) << 7);
        }
    }
    for i in (1..v.len()).rev() {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        v.swap(i, (s >> 33) as usize % (i + 1));
    }
    v
}

#[test]
fn codes_that_cross_the_last_block_boundary() {
    // Rare symbols get long codes; the dominant one 1 bit. Put a long-coded
    // element last and slide it across the block boundary bit by bit: that
    // produces both DFloat11 end cases (E2: ends on a byte boundary, E3: not).
    // Doubling counts make a unique chain: exponent 100 (the last element's)
    // gets the longest code, 11 bits.
    let mut counts = vec![(127u8, 20_000usize), (100, 1)];
    counts.extend((1..10).map(|k| (100 + k as u8, 2usize << k)));
    let base = data_for(&counts, 3);
    let make = |extra: usize| {
        let mut bits = base.clone();
        bits.extend(std::iter::repeat_n(0x3F80u16, extra));
        bits.push(100 << 7);
        bits
    };
    let total_bits = |e: &EncodedModule, bits: &[u16]| -> (u64, u64) {
        let rows = e.luts.len() / 256;
        let len = |b: u16| e.luts[(rows - 1) * 256 + (b >> 7 & 0xFF) as usize] as u64;
        let total: u64 = bits.iter().map(|&b| len(b)).sum();
        (total, len(*bits.last().unwrap()))
    };
    let (t0, last_len) = total_bits(&round_trip(&[("w", make(0))]), &make(0));
    assert!(last_len > 8, "the last code must be able to end on a byte boundary past the block");
    // The dominant exponent has a 1-bit code: each extra element moves the end by one bit.
    let first = (BLOCK_BITS - t0) as usize - 40;
    let (mut e2, mut e3) = (0, 0);
    for extra in first..first + 80 {
        let bits = make(extra);
        let e = round_trip(&[("w", bits.clone())]);
        let (total, last) = total_bits(&e, &bits);
        let last_start = total - last;
        if last_start < BLOCK_BITS && total > BLOCK_BITS {
            if total % 8 == 0 {
                e2 += 1
            } else {
                e3 += 1
            }
            // The final block holds no code start: its position is N.
            let pos: Vec<u32> =
                e.output_positions.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
            assert_eq!(pos, [0, bits.len() as u32, bits.len() as u32]);
        }
    }
    assert!(e2 > 0 && e3 > 0, "E2 hit {e2} times, E3 {e3} times");
}

#[test]
fn many_rare_exponents_fit_the_lut_limits() {
    // FORMAT.md §9: DFloat11's own encoder writes 72 sub-tables for this.
    let mut counts: Vec<(u8, usize)> = (1..201).map(|e| (e, 2)).collect();
    counts.push((230, 400_000));
    let bits = data_for(&counts, 9);
    let e = round_trip(&[("w", bits)]);
    assert!(e.luts.len() / 256 <= MAX_SUBTABLES + 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random histograms: a few common exponents with geometric counts, many
    /// rare ones, Fibonacci-like chains; lengths across block boundaries.
    #[test]
    fn random_histograms_round_trip(
        common in prop::collection::vec((0u8..240, 1usize..40_000), 1..8),
        rare in prop::collection::vec((0u8..240, 1usize..4), 0..240),
        chain in 0usize..26,
        chain_base in 0u8..200,
        seed in any::<u64>(),
        split in any::<prop::sample::Index>(),
    ) {
        let mut counts = common.clone();
        counts.extend(rare);
        let (mut a, mut b) = (1usize, 1usize);
        for i in 0..chain {
            counts.push((chain_base + i as u8 % 40, a));
            (a, b) = (b, a + b);
        }
        let bits = data_for(&counts, seed);
        let cut = split.index(bits.len() + 1);
        let e = round_trip(&[("a", bits[..cut].to_vec()), ("b", bits[cut..].to_vec())]);
        prop_assert!(e.luts.len() / 256 <= MAX_SUBTABLES + 2);
    }

    /// The code builder alone, on arbitrary histograms (no data): always within
    /// the limits and a valid prefix code.
    #[test]
    fn any_histogram_gets_a_fitting_code(
        counts in prop::collection::vec((0u8..240, prop_oneof![1u64..4, 1u64..1_000_000, 1u64..(1 << 40)]), 0..240),
    ) {
        let mut h = [0u64; 256];
        for (s, c) in counts {
            h[s as usize] += c;
        }
        let code = Code::for_histogram(&h).unwrap();
        prop_assert!(code.fits());
        let kraft: u128 = code.lengths().iter().filter(|&&l| l > 0).map(|&l| 1u128 << (64 - l)).sum();
        prop_assert!(kraft <= 1u128 << 64);
        for (&l, &c) in code.lengths().iter().zip(&h) {
            prop_assert_eq!(l > 0, c > 0);
        }
        prop_assert!(code.luts().is_some());
    }
}

/// A small Llama-shaped bf16 checkpoint directory, in two shards with an index.
fn llama_dir(dir: &Path, hidden: usize, layers: usize) -> PathBuf {
    let root = dir.join("llama");
    std::fs::create_dir_all(&root).unwrap();
    let inter = hidden * 2;
    let vocab = 96;
    let mut shards: Vec<BTreeMap<String, T>> = vec![BTreeMap::new(), BTreeMap::new()];
    let mut seed = 1;
    let mut add = |shard: usize, name: String, shape: &[u64], scale: f32| {
        let bits =
            df11::synth::realistic_weights(shape[0] as usize, shape[1..].iter().product::<u64>() as usize, scale, seed);
        seed += 1;
        shards[shard].insert(name, t("BF16", shape, bits.iter().flat_map(|b| b.to_le_bytes()).collect()));
    };
    let h = hidden as u64;
    add(0, "model.embed_tokens.weight".into(), &[vocab, h], 0.03);
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        let s = l * 2 / layers;
        add(s, format!("{p}.input_layernorm.weight"), &[h], 0.5);
        add(s, format!("{p}.self_attn.q_proj.weight"), &[h, h], 0.02);
        add(s, format!("{p}.self_attn.k_proj.weight"), &[h / 2, h], 0.02);
        add(s, format!("{p}.self_attn.v_proj.weight"), &[h / 2, h], 0.01);
        add(s, format!("{p}.self_attn.o_proj.weight"), &[h, h], 0.01);
        add(s, format!("{p}.post_attention_layernorm.weight"), &[h], 0.5);
        add(s, format!("{p}.mlp.gate_proj.weight"), &[inter as u64, h], 0.02);
        add(s, format!("{p}.mlp.up_proj.weight"), &[inter as u64, h], 0.02);
        add(s, format!("{p}.mlp.down_proj.weight"), &[h, inter as u64], 0.01);
    }
    add(1, "model.norm.weight".into(), &[h], 0.5);
    add(1, "lm_head.weight".into(), &[vocab, h], 0.02);
    shards[1]
        .insert("model.layers.0.self_attn.rotary.inv_freq".into(), t("F32", &[2], vec![0, 0, 128, 63, 0, 0, 0, 64]));
    let mut weight_map = serde_json::Map::new();
    for (i, s) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-00002.safetensors", i + 1);
        write_st(&root.join(&name), s, None);
        for k in s.keys() {
            weight_map.insert(k.clone(), name.clone().into());
        }
    }
    std::fs::write(root.join("model.safetensors.index.json"), json!({"weight_map": weight_map}).to_string()).unwrap();
    let config = json!({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": vocab, "tie_word_embeddings": false});
    std::fs::write(root.join("config.json"), config.to_string()).unwrap();
    std::fs::write(root.join("tokenizer.json"), "{\"tok\": 1}").unwrap();
    root
}

#[test]
fn llama_checkpoint_reads_back_through_df11_verify() {
    let dir = tempfile::tempdir().unwrap();
    let input = llama_dir(dir.path(), 64, 3);
    let out = dir.path().join("llama-df11");
    let opts = WriteOptions { max_shard_bytes: 40_000, ..WriteOptions::default() };
    let r = write_checkpoint(&input, &out, &opts).unwrap();
    // 3 attention + 3 MLP units, the embedding and the head.
    assert_eq!(r.compressed_modules, 8);
    assert!(r.kept_modules.is_empty());
    assert!(r.shards.len() > 1 && r.output_bytes < r.input_bytes);
    let cfg: Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["hidden_size"], 64);
    let d = &cfg["dfloat11_config"];
    assert_eq!(
        (d["version"].as_str(), d["threads_per_block"].clone(), d["bytes_per_thread"].as_u64()),
        (Some("0.5.0"), json!([512]), Some(8))
    );
    assert_eq!(d["pattern_dict"]["model\\.layers\\.\\d+\\.mlp"], json!(["gate_proj", "up_proj", "down_proj"]));
    assert_eq!(std::fs::read(out.join("tokenizer.json")).unwrap(), b"{\"tok\": 1}");
    // The index names every stored tensor, and the module arrays replace the weights.
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("model.safetensors.index.json")).unwrap()).unwrap();
    let map = index["weight_map"].as_object().unwrap();
    assert!(map.contains_key("model.layers.1.mlp.luts"));
    assert!(!map.contains_key("model.layers.1.mlp.gate_proj.weight"));
    assert!(map.contains_key("model.norm.weight") && map.contains_key("model.layers.0.self_attn.rotary.inv_freq"));
    let mut stored = BTreeMap::new();
    for shard in &r.shards {
        let (tensors, _) = read_st(&out.join(shard));
        for (k, v) in tensors {
            assert_eq!(map[&k].as_str(), Some(shard.as_str()));
            stored.insert(k, v);
        }
    }
    assert_eq!(stored.len(), map.len());
    assert_eq!(stored["lm_head.split_positions"].dtype, "I64");
    assert_eq!(stored["model.layers.0.self_attn.luts"].shape[1], 256);
    // df11's own DFloat11 reader, through the binary: every tensor bit-exact.
    let o = ok(&[&"verify", &input, &out]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("OK"));
    // No temporary directories left next to the output.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    // The output may not be the input or lie inside it, even with `force`.
    let force = WriteOptions { force: true, ..WriteOptions::default() };
    for bad in [input.clone(), input.join("sub")] {
        let e = write_checkpoint(&input, &bad, &force).unwrap_err();
        assert!(matches!(e, WriteError::Checkpoint(_)) && e.to_string().contains("input"), "{}: {e}", bad.display());
    }
    assert!(input.join("model-00001-of-00002.safetensors").exists());
    // An existing output is not replaced without `force`.
    assert!(matches!(write_checkpoint(&input, &out, &opts), Err(WriteError::Exists(_))));
    write_checkpoint(&input, &out, &WriteOptions { force: true, ..WriteOptions::default() }).unwrap();
    assert!(out.join("model.safetensors").exists());
    ok(&[&"verify", &input, &out]);
}

/// Sets element `index` of BF16 tensor `name` in the safetensors file `path` to `bits`.
fn set_element(path: &Path, name: &str, index: usize, bits: u16) {
    let (mut tensors, _) = read_st(path);
    tensors.get_mut(name).unwrap().data[2 * index..2 * index + 2].copy_from_slice(&bits.to_le_bytes());
    write_st(path, &tensors, None);
}

#[test]
fn unencodable_modules_fail_or_stay_uncompressed() {
    let dir = tempfile::tempdir().unwrap();
    let input = llama_dir(dir.path(), 32, 2);
    // An infinity in one MLP weight.
    set_element(&input.join("model-00002-of-00002.safetensors"), "model.layers.1.mlp.up_proj.weight", 5, 0x7F80);
    let out = dir.path().join("out");
    let e = write_checkpoint(&input, &out, &WriteOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("model.layers.1.mlp.up_proj.weight") && msg.contains("255"), "{msg}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a temporary was left behind");
    let opts = WriteOptions { unencodable: Unencodable::KeepUncompressed, ..WriteOptions::default() };
    let r = write_checkpoint(&input, &out, &opts).unwrap();
    assert_eq!(r.kept_modules.len(), 1);
    assert_eq!(r.kept_modules[0].0, "model.layers.1.mlp");
    let (stored, _) = read_st(&out.join("model.safetensors"));
    assert!(stored.contains_key("model.layers.1.mlp.up_proj.weight"));
    assert!(!stored.contains_key("model.layers.1.mlp.luts"));
    assert!(stored.contains_key("model.layers.0.mlp.luts"));
    ok(&[&"verify", &input, &out]);
}

#[test]
fn user_pattern_dict_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = llama_dir(dir.path(), 32, 2);
    let dict = dir.path().join("dict.json");
    std::fs::write(&dict, r#"{"model\\.layers\\.\\d+\\.mlp\\.down_proj": [], "lm_head": []}"#).unwrap();
    let opts = WriteOptions { pattern_dict: Some(PatternDict::from_file(&dict).unwrap()), ..WriteOptions::default() };
    let out = dir.path().join("out");
    let r = write_checkpoint(&input, &out, &opts).unwrap();
    assert_eq!(r.compressed_modules, 3);
    let (stored, _) = read_st(&out.join("model.safetensors"));
    assert!(stored.contains_key("model.layers.1.mlp.down_proj.gaps"));
    assert!(stored.contains_key("model.layers.1.mlp.up_proj.weight"));
    ok(&[&"verify", &input, &out]);
}

/// Files and directories directly in `dir`, for "nothing left behind" checks.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn cli_compress_to_dfloat11_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let input = llama_dir(dir.path(), 64, 2);
    let out = dir.path().join("dfloat11");
    let o = ok(&[&"compress", &input, &"-o", &out, &"--format", &"dfloat11"]);
    let summary = String::from_utf8_lossy(&o.stderr);
    assert!(summary.contains("tensors, 6 DFloat11 modules") && summary.contains("bits/weight"), "{summary}");
    let cfg: Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["dfloat11_config"]["version"], "0.5.0");
    assert!(read_st(&out.join("model.safetensors")).0.contains_key("model.layers.1.mlp.luts"));
    ok(&[&"verify", &input, &out]);
    let back = dir.path().join("back");
    ok(&[&"decompress", &out, &"-o", &back]);
    ok(&[&"verify", &input, &back]);
    // The output does not depend on the thread count; -q prints nothing.
    let one = dir.path().join("one-thread");
    let o = ok(&[&"compress", &input, &"-o", &one, &"--format", &"dfloat11", &"--threads", &"1", &"-q"]);
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(one.join("model.safetensors")).unwrap(),
        std::fs::read(out.join("model.safetensors")).unwrap()
    );
    // An existing output needs --force, and the input is never the output.
    let e = fails(&[&"compress", &input, &"-o", &out, &"--format", &"dfloat11"]);
    assert!(e.contains("already exists"), "{e}");
    ok(&[&"compress", &input, &"-o", &out, &"--format", &"dfloat11", &"--force"]);
    let e = fails(&[&"compress", &input, &"-o", &input, &"--format", &"dfloat11", &"--force"]);
    assert!(e.contains("input"), "{e}");
    ok(&[&"verify", &input, &out]);
    // A df11 checkpoint is decoded and written as DFloat11 too.
    let df11 = dir.path().join("df11");
    ok(&[&"compress", &input, &"-o", &df11]);
    let out2 = dir.path().join("from-df11");
    ok(&[&"compress", &df11, &"-o", &out2, &"--format", &"dfloat11"]);
    ok(&[&"verify", &input, &out2]);
    // A DFloat11 checkpoint is not compressed again.
    let e = fails(&[&"compress", &out, &"-o", &dir.path().join("again"), &"--format", &"dfloat11"]);
    assert!(e.contains("already a DFloat11 checkpoint"), "{e}");
}

#[test]
fn cli_refuses_unencodable_weights_unless_asked_to_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = llama_dir(dir.path(), 32, 2);
    // A NaN in an attention weight.
    set_element(&input.join("model-00001-of-00002.safetensors"), "model.layers.0.self_attn.k_proj.weight", 10, 0x7FC1);
    let before = entries(dir.path());
    let out = dir.path().join("out");
    let e = fails(&[&"compress", &input, &"-o", &out, &"--format", &"dfloat11"]);
    assert!(e.contains("model.layers.0.self_attn.k_proj.weight") && e.contains("--keep-unencodable"), "{e}");
    assert_eq!(entries(dir.path()), before, "output or temporary left behind");
    let o = ok(&[&"compress", &input, &"-o", &out, &"--format", &"dfloat11", &"--keep-unencodable"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("warning: module model.layers.0.self_attn kept uncompressed"), "{err}");
    assert!(err.contains("(1 kept uncompressed)"), "{err}");
    let (stored, _) = read_st(&out.join("model.safetensors"));
    assert!(stored.contains_key("model.layers.0.self_attn.k_proj.weight"));
    assert!(stored.contains_key("model.layers.1.self_attn.luts"));
    ok(&[&"verify", &input, &out]);
}

#[test]
fn cli_pattern_dict_from_a_file_and_single_file_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = llama_dir(dir.path(), 32, 2);
    let dict = dir.path().join("dict.json");
    std::fs::write(&dict, r#"{"model\\.layers\\.\\d+\\.mlp": ["gate_proj", "up_proj", "down_proj"]}"#).unwrap();
    let out = dir.path().join("out");
    ok(&[&"compress", &input, &"-o", &out, &"--format", &"dfloat11", &"--pattern-dict", &dict]);
    let (stored, _) = read_st(&out.join("model.safetensors"));
    assert!(stored.contains_key("model.layers.1.mlp.luts"));
    assert!(stored.contains_key("lm_head.weight") && stored.contains_key("model.layers.0.self_attn.q_proj.weight"));
    ok(&[&"verify", &input, &out]);
    // One safetensors file has no config: it needs a pattern dict.
    let file = input.join("model-00001-of-00002.safetensors");
    let single = dir.path().join("single");
    let e = fails(&[&"compress", &file, &"-o", &single, &"--format", &"dfloat11"]);
    assert!(e.contains("pattern") && e.contains("--pattern-dict"), "{e}");
    ok(&[&"compress", &file, &"-o", &single, &"--format", &"dfloat11", &"--pattern-dict", &dict]);
    let cfg: Value = serde_json::from_slice(&std::fs::read(single.join("config.json")).unwrap()).unwrap();
    assert!(cfg["dfloat11_config"]["pattern_dict"].is_object());
    assert!(read_st(&single.join("model.safetensors")).0.contains_key("model.layers.0.mlp.luts"));
    // DFloat11 stores no shapes; a shapes file gives them back.
    let shapes = dir.path().join("shapes.json");
    let (orig, _) = read_st(&file);
    let map: serde_json::Map<String, Value> = orig.iter().map(|(k, v)| (k.clone(), json!(v.shape))).collect();
    std::fs::write(&shapes, Value::Object(map).to_string()).unwrap();
    ok(&[&"verify", &file, &single, &"--shapes", &shapes]);
}

#[test]
fn cli_rejects_bad_pattern_dicts_and_foreign_options() {
    let dir = tempfile::tempdir().unwrap();
    let input = llama_dir(dir.path(), 32, 1);
    let out = dir.path().join("out");
    let dict = dir.path().join("dict.json");
    for (text, want) in [("{not json", "not valid JSON"), (r#"{"(": []}"#, "key \"(\""), (r#"{"a": 3}"#, "list")] {
        std::fs::write(&dict, text).unwrap();
        let e = fails(&[&"compress", &input, &"-o", &out, &"--format", &"dfloat11", &"--pattern-dict", &dict]);
        assert!(e.contains("dict.json") && e.contains(want), "{text}: {e}");
        assert!(!out.exists());
    }
    // Options of the other format are usage errors (exit 2), before anything is written.
    for (args, want) in [
        (&["--format", "dfloat11", "--layout", "lanes"][..], "--layout"),
        (&["--format", "dfloat11", "--segment-rows", "256"], "--segment-rows"),
        (&["--format", "dfloat11", "--shapes", "s.json"], "--shapes"),
        (&["--keep-unencodable"], "--keep-unencodable"),
        (&["--format", "df11", "--pattern-dict", "dict.json"], "--pattern-dict"),
    ] {
        let mut c = df11();
        c.arg("compress").arg(&input).arg("-o").arg(&out).args(args);
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want) && err.contains("Usage"), "{args:?}: {err}");
        assert!(!out.exists());
    }
}
