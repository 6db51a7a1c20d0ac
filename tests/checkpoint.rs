//! The checkpoint API (`df11::checkpoint`) on df11 and plain safetensors
//! checkpoints: the strict parser, listing, decoding by tensor and by block,
//! and writing. DFloat11 checkpoints are covered in tests/dfloat11.rs.

mod common;

use common::*;
use df11::checkpoint::{Checkpoint, Error, Kind, OwnedTensor, Storage, TensorSource, WriteOptions, write_file};
use std::collections::BTreeMap;
use std::path::Path;

/// Writes a safetensors file with a hand-made header (entries as given, so
/// offsets can be wrong) followed by `data`.
fn raw_file(path: &Path, entries: &[(&str, &str, &[u64], [u64; 2])], data: &[u8]) {
    let mut header = serde_json::Map::new();
    for (name, dtype, shape, offs) in entries {
        header.insert(name.to_string(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": offs}));
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

fn safetensors_error(path: &Path) -> (Option<String>, String) {
    match Checkpoint::open(path) {
        Err(e @ Error::Safetensors { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            let Error::Safetensors { tensor, .. } = e else { unreachable!() };
            (tensor, text)
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("{} was accepted", path.display()),
    }
}

#[test]
fn the_parser_rejects_overlaps_gaps_and_out_of_file_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.safetensors");
    // Overlap: b starts inside a.
    raw_file(&p, &[("a", "U8", &[4], [0, 4]), ("b", "U8", &[4], [2, 6])], &[0; 6]);
    let (t, msg) = safetensors_error(&p);
    assert_eq!(t.as_deref(), Some("b"), "{msg}");
    assert!(msg.contains("overlap") && msg.contains("tensor b"), "{msg}");
    // Two tensors sharing the same bytes.
    raw_file(&p, &[("a", "U8", &[4], [0, 4]), ("b", "U8", &[4], [0, 4])], &[0; 4]);
    let (t, msg) = safetensors_error(&p);
    assert_eq!(t.as_deref(), Some("b"), "{msg}");
    // Gap: two bytes between a and b.
    raw_file(&p, &[("a", "U8", &[4], [0, 4]), ("b", "U8", &[4], [6, 10])], &[0; 10]);
    let (t, msg) = safetensors_error(&p);
    assert_eq!(t.as_deref(), Some("b"), "{msg}");
    assert!(msg.contains("gap"), "{msg}");
    // Gap at the start.
    raw_file(&p, &[("a", "U8", &[4], [2, 6])], &[0; 6]);
    assert_eq!(safetensors_error(&p).0.as_deref(), Some("a"));
    // Bytes after the last tensor.
    raw_file(&p, &[("a", "U8", &[4], [0, 4])], &[0; 5]);
    let (t, msg) = safetensors_error(&p);
    assert_eq!(t, None, "{msg}");
    // Out of the file.
    raw_file(&p, &[("a", "U8", &[4], [0, 4]), ("w", "U8", &[100], [4, 104])], &[0; 8]);
    let (t, msg) = safetensors_error(&p);
    assert_eq!(t.as_deref(), Some("w"), "{msg}");
    assert!(msg.contains("data section"), "{msg}");
    // Size and shape disagree.
    raw_file(&p, &[("x", "BF16", &[3], [0, 4])], &[0; 4]);
    assert_eq!(safetensors_error(&p).0.as_deref(), Some("x"));
    // Reversed offsets.
    raw_file(&p, &[("r", "U8", &[0], [4, 0])], &[0; 4]);
    assert_eq!(safetensors_error(&p).0.as_deref(), Some("r"));
    // A valid file (zero-length tensor included) opens.
    raw_file(&p, &[("a", "U8", &[4], [0, 4]), ("e", "F32", &[0], [4, 4]), ("b", "BF16", &[1], [4, 6])], &[7; 6]);
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.tensors().len(), 3);
    assert_eq!(ck.decode("b").unwrap(), [7, 7]);
    // A dtype of no whole byte size is listed; sizes that cannot be known are an error, not a panic.
    raw_file(&p, &[("q", "F4", &[8], [0, 4]), ("huge", "F4", &[u64::MAX, 3], [4, 4])], &[1; 4]);
    let ck = Checkpoint::open(&p).unwrap();
    assert!(ck.decode("q").unwrap_err().to_string().contains("tensor q"));
    assert!(ck.decode("huge").is_err());
    assert!(ck.decode_group(&ck.block_groups().rest).is_err());
}

/// A small Llama-style model: embeddings, `layers` blocks, norm and head, in
/// BF16 plus one F32 tensor per block.
fn llama_tensors(layers: usize) -> Vec<OwnedTensor> {
    let h = 64u64;
    let mut v = vec![OwnedTensor::new("model.embed_tokens.weight", "BF16", vec![100, h], bf16_data(100 * 64, 1))];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        let seed = 10 + l as u64;
        v.push(OwnedTensor::new(format!("{p}.input_layernorm.weight"), "F32", vec![h], vec![l as u8; 256]));
        v.push(OwnedTensor::new(format!("{p}.self_attn.q_proj.weight"), "BF16", vec![h, h], bf16_data(4096, seed)));
        v.push(OwnedTensor::new(
            format!("{p}.mlp.up_proj.weight"),
            "BF16",
            vec![96, h],
            bf16_data(96 * 64, seed + 100),
        ));
    }
    v.push(OwnedTensor::new("model.norm.weight", "BF16", vec![h], bf16_data(64, 3)));
    v.push(OwnedTensor::new("lm_head.weight", "BF16", vec![100, h], bf16_data(6400, 4)));
    v
}

fn by_name(ts: &[OwnedTensor]) -> BTreeMap<&str, &OwnedTensor> {
    ts.iter().map(|t| (t.meta.name.as_str(), t)).collect()
}

#[test]
fn write_open_list_and_decode_a_df11_file() {
    // The default (lanes9), lanes and the first layout, which files still hold.
    for layout in [df11::Layout::Lanes9, df11::Layout::Lanes, df11::Layout::Warp] {
        write_open_list_and_decode(layout);
    }
    assert_eq!(df11::EncodeOptions::default().layout, df11::Layout::Lanes9);
}

fn write_open_list_and_decode(layout: df11::Layout) {
    let dir = tempfile::tempdir().unwrap();
    let mut src = llama_tensors(3);
    // Constant tensors (norms at 1.0, zero biases) have the zero-length code
    // of their one symbol: a lanes9 container of them holds 8 elements in
    // fewer than 8 bytes, which the reader's bound on the metadata's shape
    // once refused.
    let ones = 0x3F80u16.to_le_bytes().repeat(4096);
    src.push(OwnedTensor::new("model.layers.0.post_attention_layernorm.weight", "BF16", vec![4096], ones));
    src.push(OwnedTensor::new("model.layers.0.mlp.down_proj.bias", "BF16", vec![8192], vec![0; 16384]));
    let path = dir.path().join("m.safetensors");
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let opts = df11::EncodeOptions { layout, ..Default::default() };
    let summary = write_file(&path, &src, Some(opts), Some(meta)).unwrap();
    assert_eq!(summary.tensors, src.len());
    assert!(summary.written < summary.plain);
    // No temporary is left next to it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // An independent reader accepts it, and df11 wrote its metadata.
    let (stored, md) = read_st(&path);
    assert_eq!(stored.len(), src.len());
    let md = md.unwrap();
    assert_eq!(md["format"], "pt");
    assert!(md.contains_key(df11::checkpoint::META_KEY));

    let ck = Checkpoint::open(&path).unwrap();
    assert_eq!(ck.kind(), Kind::Df11);
    let want = by_name(&src);
    let listed = ck.tensors();
    assert_eq!(listed.len(), src.len());
    for e in &listed {
        let w = want[e.name.as_str()];
        assert_eq!((&e.dtype, &e.shape), (&w.meta.dtype, &w.meta.shape), "{}", e.name);
        assert_eq!(e.decoded_bytes, w.data.len() as u64);
        match e.dtype.as_str() {
            "BF16" if e.decoded_bytes >= 8192 => {
                assert_eq!(e.storage, Storage::Df11 { layout: Some(layout) }, "{}", e.name);
                assert!(e.stored_bytes < e.decoded_bytes, "{}", e.name);
            }
            // The container's fixed part outweighs a 64-element tensor's saving: stored raw.
            "BF16" => assert_eq!((e.storage.clone(), e.stored_bytes), (Storage::Raw, e.decoded_bytes), "{}", e.name),
            _ => assert_eq!((e.storage.clone(), e.stored_bytes), (Storage::Raw, e.decoded_bytes)),
        }
        // Both decode paths, bit for bit.
        assert!(ck.decode(&e.name).unwrap() == w.data, "{}", e.name);
        let mut buf = vec![0u8; w.data.len()];
        ck.decode_into(&e.name, &mut buf).unwrap();
        assert!(buf == w.data, "{}", e.name);
    }
    assert_eq!(ck.tensor("lm_head.weight").unwrap().shape, [100, 64]);
    // Errors name the file and tensor; none panics.
    let e = ck.decode("nope").unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }) && e.to_string().contains("nope"), "{e}");
    let e = ck.decode_into("lm_head.weight", &mut [0u8; 10]).unwrap_err().to_string();
    assert!(e.contains("lm_head.weight") && e.contains("m.safetensors"), "{e}");
    // A compressed group for the GPU holds the BF16 tensors; a raw one is refused by name.
    let g = ck.compressed_group(&["model.layers.1.mlp.up_proj.weight", "lm_head.weight"]).unwrap();
    assert_eq!(g.tensors.iter().map(|t| t.num_elements).collect::<Vec<_>>(), [96 * 64, 6400]);
    let e = ck.compressed_group(&["model.layers.1.input_layernorm.weight"]).unwrap_err().to_string();
    assert!(e.contains("model.layers.1.input_layernorm.weight"), "{e}");
}

#[test]
fn a_tensor_source_gets_size_checks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let src = vec![OwnedTensor::new("w", "BF16", vec![3], vec![0; 4])];
    let e = write_file(&path, &src, None, None).unwrap_err().to_string();
    assert!(e.contains("tensor w"), "{e}");
    assert!(!path.exists(), "a failed write leaves no file");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nor a temporary");
    // A custom source: tensors produced on demand.
    struct Ramp;
    impl TensorSource for Ramp {
        fn tensors(&self) -> Vec<df11::checkpoint::TensorMeta> {
            (0..3)
                .map(|i| df11::checkpoint::TensorMeta {
                    name: format!("layers.{i}.w"),
                    dtype: "BF16".into(),
                    shape: vec![300],
                })
                .collect()
        }
        fn data(&self, i: usize) -> df11::checkpoint::Result<std::borrow::Cow<'_, [u8]>> {
            Ok(bf16_data(300, i as u64).into())
        }
    }
    write_file(&path, &Ramp, Some(df11::EncodeOptions::default()), None).unwrap();
    let ck = Checkpoint::open(&path).unwrap();
    for i in 0..3 {
        assert!(ck.decode(&format!("layers.{i}.w")).unwrap() == bf16_data(300, i));
    }
    assert_eq!(ck.block_groups().blocks.len(), 3);
}

/// A sharded plain checkpoint directory with an index and a config.
fn sharded(dir: &Path, src: &[OwnedTensor]) -> std::path::PathBuf {
    let root = dir.join("plain");
    std::fs::create_dir(&root).unwrap();
    let (a, b) = src.split_at(src.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", a), ("model-00002-of-00002.safetensors", b)] {
        write_file(&root.join(file), part, None, None).unwrap();
        for t in part {
            weight_map.insert(t.meta.name.clone(), file.into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(root.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::write(root.join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    root
}

#[test]
fn block_groups_of_plain_and_df11_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let src = llama_tensors(12);
    let plain = sharded(dir.path(), &src);
    let ck = Checkpoint::open(&plain).unwrap();
    assert_eq!(ck.kind(), Kind::Plain);
    assert_eq!(ck.shards().len(), 2);
    // Compress the whole directory through the API.
    let df11_dir = dir.path().join("df11");
    let opts = WriteOptions { encode: Some(df11::EncodeOptions::default()), ..Default::default() };
    ck.write_to(&df11_dir, &opts).unwrap();
    assert!(df11_dir.join("config.json").exists() && df11_dir.join("model.safetensors.index.json").exists());
    let comp = Checkpoint::open(&df11_dir).unwrap();
    assert_eq!(comp.kind(), Kind::Df11);

    let want = by_name(&src);
    for c in [&ck, &comp] {
        let g = c.block_groups();
        // Blocks 0..12 in numeric order (2 before 10), three tensors each.
        let idx: Vec<u64> = g.blocks.iter().map(|b| b.block.as_ref().unwrap().index).collect();
        assert_eq!(idx, (0..12).collect::<Vec<_>>());
        let per_block = 256 + 2 * 4096 + 2 * 96 * 64;
        assert!(g.blocks.iter().all(|b| b.members.len() == 3 && b.bytes == per_block as u64));
        assert_eq!(g.blocks[0].elements, 64 + 4096 + 96 * 64);
        assert_eq!((g.max_block_bytes(), g.max_block_elements()), (per_block as u64, 64 + 4096 + 96 * 64));
        let rest: Vec<&str> = g.rest.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(rest, ["lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"]);
        // One reusable buffer for every block; each decodes to its tensors back to back.
        let mut buf = vec![0u8; g.max_block_bytes() as usize];
        for group in g.iter() {
            let out = if group.block.is_some() {
                let out = &mut buf[..group.bytes as usize];
                c.decode_group_into(group, out).unwrap();
                out.to_vec()
            } else {
                c.decode_group(group).unwrap()
            };
            let mut expect = Vec::new();
            for m in &group.members {
                assert_eq!(m.offset, expect.len() as u64);
                expect.extend_from_slice(&want[m.name.as_str()].data);
            }
            assert!(out == expect, "{:?}", group.block);
        }
        // A wrong-sized buffer is an error, not a panic.
        assert!(c.decode_group_into(&g.blocks[0], &mut buf[..10]).is_err());
        // A group of named tensors, across shards.
        let named = c.group(&["lm_head.weight", "model.layers.0.mlp.up_proj.weight"]).unwrap();
        let out = c.decode_group(&named).unwrap();
        assert!(out[..12800] == want["lm_head.weight"].data[..]);
        assert!(out[12800..] == want["model.layers.0.mlp.up_proj.weight"].data[..]);
    }
    // Back to plain through the API: bit-identical files.
    let back = dir.path().join("back");
    comp.write_to(&back, &WriteOptions::default()).unwrap();
    for f in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"] {
        assert_eq!(read_st(&back.join(f)).0, read_st(&plain.join(f)).0, "{f}");
    }
}

#[cfg(feature = "cuda")]
#[path = "gpu_common/mod.rs"]
mod gpu_common;

#[cfg(feature = "cuda")]
#[test]
fn device_groups_decode_on_the_gpu() {
    let Some(gpu) = gpu_common::decoder() else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = llama_tensors(2);
    let path = dir.path().join("m.safetensors");
    write_file(&path, &src, None, None).unwrap();
    let ck = Checkpoint::open(&path).unwrap();
    let names = ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight"];
    let mut group = df11::checkpoint::gpu::upload(&gpu, &ck, &names).unwrap();
    let mut out = gpu.stream().alloc_zeros::<u16>(group.num_elements()).unwrap();
    df11::checkpoint::gpu::decode_to_device(&gpu, &ck, &mut group, &mut out).unwrap();
    let host: Vec<u16> = gpu.stream().clone_dtoh(&out).unwrap();
    let mut expect = Vec::new();
    for n in names {
        expect.extend(ck.decode(n).unwrap().chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])));
    }
    assert!(host == expect);
    // The host decoder on the GPU gives the same bits.
    let dec = df11::checkpoint::gpu::GpuHostDecoder::new(gpu);
    let mut buf = vec![0u8; 4096 * 2];
    ck.decode_into_with(names[0], &mut buf, &dec).unwrap();
    assert!(buf == ck.decode(names[0]).unwrap());
}

/// BF16 bits that no exponent code can shrink: every exponent equally often,
/// NaN payloads (quiet and signalling, both signs), infinities, zeros and
/// subnormals first.
fn pattern_bf16(n: usize) -> Vec<u8> {
    const SPECIAL: [u16; 8] = [0x7F81, 0xFFFF, 0x7FC1, 0x7F80, 0xFF80, 0x8000, 0x0001, 0xFFC0];
    (0..n)
        .map(|i| match SPECIAL.get(i) {
            Some(&b) => b,
            None => ((i as u16 & 1) << 15) | ((i as u16 * 97 % 256) << 7) | ((i as u16 * 37) & 0x7F),
        })
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn bits(bytes: &[u8]) -> Vec<u16> {
    bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
}

/// Tiny BF16 tensors, whose df11 container would not be smaller than their
/// raw bytes, are stored raw (listed in the metadata's `raw`), and every
/// tensor, raw or not, decodes bit for bit.
#[test]
fn tiny_bf16_tensors_are_stored_raw_bit_exact() {
    use df11::checkpoint::RAW_FALLBACK_MARGIN;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let src = vec![
        OwnedTensor::new("one", "BF16", vec![1], pattern_bf16(1)),
        OwnedTensor::new("seven", "BF16", vec![7], pattern_bf16(7)),
        OwnedTensor::new("patterns", "BF16", vec![384], pattern_bf16(384)),
        OwnedTensor::new("empty", "BF16", vec![0, 3], vec![]),
        OwnedTensor::new("norm", "BF16", vec![384], bf16_data(384, 7)),
        OwnedTensor::new("bias", "F32", vec![3], vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
        OwnedTensor::new("large", "BF16", vec![256, 256], bf16_data(1 << 16, 8)),
    ];
    let opts = df11::EncodeOptions::default();
    let summary = write_file(&path, &src, Some(opts), None).unwrap();
    let ck = Checkpoint::open(&path).unwrap();
    let (stored, md) = read_st(&path);
    let meta: serde_json::Value = serde_json::from_str(&md.unwrap()[df11::checkpoint::META_KEY]).unwrap();
    let mut raw = Vec::new();
    for t in &src {
        let e = ck.tensor(&t.meta.name).unwrap();
        let n = t.data.len() as u64;
        assert_eq!((&e.dtype, &e.shape, e.decoded_bytes), (&t.meta.dtype, &t.meta.shape, n), "{}", e.name);
        assert!(bits(&ck.decode(&e.name).unwrap()) == bits(&t.data), "{}", e.name);
        if t.meta.dtype != "BF16" {
            assert_eq!(e.storage, Storage::Raw);
            continue;
        }
        // The rule, against an independent encoding: df11 only where it saves the margin.
        let independent = df11::compress_with(&bits(&t.data), &opts);
        let container = independent.to_bytes().len() as u64;
        let pays = container + RAW_FALLBACK_MARGIN <= n;
        assert!(e.stored_bytes <= n + 16, "{}: {} bytes stored for {n}", e.name, e.stored_bytes);
        if pays {
            assert_eq!(e.storage, Storage::Df11 { layout: Some(independent.layout) }, "{}", e.name);
            assert_eq!(e.stored_bytes, container, "{}", e.name);
            assert_eq!(meta["tensors"][&e.name]["shape"], serde_json::json!(t.meta.shape), "{}", e.name);
        } else {
            assert_eq!((e.storage.clone(), e.stored_bytes), (Storage::Raw, n), "{}", e.name);
            // Stored as it came: same dtype, shape and bytes, for any safetensors reader.
            let s = &stored[&e.name];
            assert_eq!((s.dtype.as_str(), &s.shape, &s.data), ("BF16", &t.meta.shape, &t.data), "{}", e.name);
            assert_eq!(meta["raw"][&e.name], serde_json::json!({"dtype": "BF16", "shape": t.meta.shape}));
            assert!(meta["tensors"].get(&e.name).is_none(), "{}", e.name);
            raw.push(e.name.clone());
        }
    }
    // "norm" too: 384 weights save less than the lanes layouts' 32 offsets
    // per segment cost (the warp layout stored it compressed).
    assert_eq!(raw, ["one", "seven", "patterns", "empty", "norm"]);
    assert_eq!(meta["raw"].as_object().unwrap().len(), 5);
    assert!(ck.tensor("large").unwrap().stored_bytes < (1 << 17) * 7 / 10);
    assert_eq!((summary.bf16_raw, summary.bf16_elems), (5, 1 + 7 + 384 + 384 + (1 << 16)));
    // Blocks and groups decode the raw tensors with the rest.
    let g = ck.group(&["seven", "large", "one"]).unwrap();
    let mut want = src[1].data.clone();
    want.extend_from_slice(&src[6].data);
    want.extend_from_slice(&src[0].data);
    assert!(bits(&ck.decode_group(&g).unwrap()) == bits(&want));
    // Back to plain: the same tensors, and no df11 metadata.
    let back = dir.path().join("back.safetensors");
    ck.write_to(&back, &WriteOptions::default()).unwrap();
    let (b, bmd) = read_st(&back);
    assert_eq!(bmd, None);
    for t in &src {
        let r = &b[&t.meta.name];
        assert_eq!((&r.dtype, &r.shape), (&t.meta.dtype, &t.meta.shape), "{}", t.meta.name);
        assert!(bits(&r.data) == bits(&t.data), "{}", t.meta.name);
    }
    // A raw tensor is not a df11 container: the GPU group refuses it by name.
    let e = ck.compressed_group(&["large", "patterns"]).unwrap_err().to_string();
    assert!(e.contains("patterns"), "{e}");
}

/// Writes a df11 file by hand: tensors as given, `df11` metadata as given.
fn df11_file(path: &Path, tensors: &[(&str, T)], df11_meta: &str) {
    let tensors: BTreeMap<String, T> = tensors.iter().map(|(n, t)| (n.to_string(), t.clone())).collect();
    write_st(path, &tensors, Some(&BTreeMap::from([("df11".to_string(), df11_meta.to_string())])));
}

/// A `raw` entry must describe a BF16 tensor the file holds with that dtype
/// and shape, not also listed as compressed; anything else is an error naming
/// the tensor (and the file), never a panic.
#[test]
fn raw_fallback_entries_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.safetensors");
    let container = df11::compress_bits(&bits(&bf16_data(1000, 3))).to_bytes();
    let w = ("w", t("U8", &[container.len() as u64], container.clone()));
    let n = ("n", t("BF16", &[4], pattern_bf16(4)));
    let listed = r#""tensors":{"w":{"dtype":"BF16","shape":[10,100]}}"#;
    // Valid: n is a listed raw fallback.
    df11_file(
        &p,
        &[w.clone(), n.clone()],
        &format!(r#"{{"format_version":1,{listed},"raw":{{"n":{{"dtype":"BF16","shape":[4]}}}}}}"#),
    );
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.tensor("n").unwrap().storage, Storage::Raw);
    assert!(bits(&ck.decode("n").unwrap()) == bits(&pattern_bf16(4)));
    assert!(bits(&ck.decode("w").unwrap()) == bits(&bf16_data(1000, 3)));
    // Files written before `raw` existed: an unlisted BF16 tensor is read as is.
    df11_file(&p, &[w.clone(), n.clone()], &format!(r#"{{"format_version":1,{listed}}}"#));
    assert!(bits(&Checkpoint::open(&p).unwrap().decode("n").unwrap()) == bits(&pattern_bf16(4)));

    let f32_n = ("n", t("F32", &[2], pattern_bf16(4)));
    let matrix_n = ("n", t("BF16", &[2, 2], pattern_bf16(4)));
    let both = r#""tensors":{"w":{"dtype":"BF16","shape":[10,100]},"n":{"dtype":"BF16","shape":[4]}}"#;
    // What is wrong, the file's tensors, its raw entry, what the error says.
    type Case<'a> = (&'a str, Vec<(&'a str, T)>, String, &'a str);
    let cases: [Case; 6] = [
        ("missing", vec![w.clone()], r#""n":{"dtype":"BF16","shape":[4]}"#.into(), "does not hold"),
        ("stored as F32", vec![w.clone(), f32_n], r#""n":{"dtype":"BF16","shape":[2]}"#.into(), "F32"),
        ("another shape", vec![w.clone(), matrix_n], r#""n":{"dtype":"BF16","shape":[4]}"#.into(), "[2, 2]"),
        ("not BF16", vec![w.clone(), n.clone()], r#""n":{"dtype":"F16","shape":[4]}"#.into(), "F16"),
        ("listed twice", vec![w.clone(), n.clone()], r#""n":{"dtype":"BF16","shape":[4]}"#.into(), "both"),
        ("the container", vec![w.clone()], r#""w":{"dtype":"BF16","shape":[1000]}"#.into(), "both"),
    ];
    for (what, tensors, entry, says) in cases {
        let l = if what == "listed twice" { both } else { listed };
        df11_file(&p, &tensors, &format!(r#"{{"format_version":1,{l},"raw":{{{entry}}}}}"#));
        let name = if what == "the container" { "w" } else { "n" };
        match Checkpoint::open(&p) {
            Err(e @ Error::Tensor { .. }) => {
                let text = e.to_string();
                assert!(text.contains("r.safetensors") && text.contains(&format!("tensor {name}:")), "{what}: {text}");
                assert!(text.contains(says), "{what}: {text}");
            }
            Err(e) => panic!("{what}: wrong error: {e}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
    // A `raw` that is not a map of entries is malformed metadata.
    for bad in [r#"["n"]"#, r#"{"n":{"dtype":"BF16"}}"#, r#"{"n":{"dtype":"BF16","shape":[-4]}}"#, "null"] {
        df11_file(&p, &[w.clone(), n.clone()], &format!(r#"{{"format_version":1,{listed},"raw":{bad}}}"#));
        match Checkpoint::open(&p) {
            Err(e @ Error::Checkpoint { .. }) => assert!(e.to_string().contains("df11 metadata"), "{bad}: {e}"),
            Err(e) => panic!("{bad}: wrong error: {e}"),
            Ok(_) => panic!("{bad}: accepted"),
        }
    }
}

/// Every one-byte change of a df11 file's header (XOR 0x01 and 0x20, a `0`,
/// a space): opening gives an error, or tensors that decode to their original
/// bits unless their dtype or shape visibly changed. Changes inside the `raw`
/// entries, or to a raw tensor's name in the header, are always errors when
/// the file is opened: without the entries they could pass unnoticed.
#[test]
fn header_corruption_sweep_with_raw_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let src = vec![
        OwnedTensor::new("large", "BF16", vec![64, 64], bf16_data(4096, 5)),
        OwnedTensor::new("one", "BF16", vec![1], pattern_bf16(1)),
        OwnedTensor::new("bias", "F32", vec![2], vec![9; 8]),
        OwnedTensor::new("seven", "BF16", vec![7], pattern_bf16(7)),
    ];
    write_file(&path, &src, Some(df11::EncodeOptions::default()), None).unwrap();
    let good = std::fs::read(&path).unwrap();
    let hlen = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = &good[8..8 + hlen];
    let find = |s: &str| {
        let at = header.windows(s.len()).position(|w| w == s.as_bytes());
        at.unwrap_or_else(|| panic!("{s} not in the header")) + 8
    };
    // The raw map's entries (inside the escaped metadata string), and the raw tensors' names.
    let raw_start = find(r#"\"raw\":{"#) + r#"\"raw\":{"#.len();
    let raw_end = raw_start + find(r#"[7]}"#) + 3 - raw_start;
    let mut must_fail: Vec<usize> = (raw_start..raw_end).collect();
    for name in [r#""one":{"dtype""#, r#""seven":{"dtype""#] {
        let at = find(name) + 1;
        must_fail.extend(at..at + name.find(':').unwrap() - 2);
    }
    let want = by_name(&src);
    let (mut rejected, mut accepted) = (0, 0);
    let p = dir.path().join("bad.safetensors");
    for i in 8..8 + hlen {
        for m in [good[i] ^ 0x01, good[i] ^ 0x20, b'0', b' '] {
            if m == good[i] {
                continue;
            }
            let mut bad = good.clone();
            bad[i] = m;
            std::fs::write(&p, &bad).unwrap();
            // Accepted: each original tensor decodes to its bits, or has
            // visibly changed (dtype or shape: the `df11` key renamed, say).
            // A tensor that decodes to other bits under its dtype and shape would
            // be silent corruption.
            let opened = Checkpoint::open(&p).map(|ck| {
                for e in ck.tensors() {
                    if let (Some(w), Ok(d)) = (want.get(e.name.as_str()), ck.decode(&e.name))
                        && (&e.dtype, &e.shape) == (&w.meta.dtype, &w.meta.shape)
                    {
                        assert!(bits(&d) == bits(&w.data), "byte {i} -> {m:#04x}: {} decoded to other bits", e.name);
                    }
                }
            });
            if opened.is_ok() {
                accepted += 1;
                let c = header[i - 8] as char;
                assert!(!must_fail.contains(&i), "byte {i} ({c:?}) -> {m:#04x} accepted");
            } else {
                rejected += 1;
            }
        }
    }
    assert!(must_fail.len() > 60 && rejected > 1000, "{} {rejected} {accepted}", must_fail.len());
}

/// The committed seeds of the `checkpoint_read` fuzz target stay what they
/// claim to be: `ckpt_*` are valid df11 files (the `_raw` ones list their
/// BF16 tensor `b` as a raw fallback), `regression_*` are rejected.
#[test]
fn checkpoint_fuzz_seeds_are_valid_files_or_regressions() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/checkpoint_read");
    let mut names: Vec<String> =
        std::fs::read_dir(&seeds).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert!(names.iter().filter(|n| n.ends_with("_raw")).count() >= 2, "{names:?}");
    for name in names {
        let path = seeds.join(&name);
        if name.starts_with("regression_") {
            assert!(Checkpoint::open(&path).and_then(|ck| ck.decode("w")).is_err(), "{name}");
            continue;
        }
        let ck = Checkpoint::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ck.kind(), Kind::Df11, "{name}");
        assert_eq!(ck.tensor("b").unwrap().storage, Storage::Raw, "{name}");
        assert_eq!(ck.decode("b").unwrap(), [0x80, 0x3F, 0, 0xC0], "{name}");
        assert!(matches!(ck.tensor("w").unwrap().storage, Storage::Df11 { .. }), "{name}");
        ck.decode("w").unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The header is written last into room reserved before any tensor is
/// compressed: it must fit however the BF16 tensors split between compressed
/// and raw, with many dimensions, and names that JSON escapes.
#[test]
fn header_room_fits_any_split_between_compressed_and_raw() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let tiny = |name: &str, shape: Vec<u64>| {
        let n = shape.iter().product::<u64>() as usize;
        OwnedTensor::new(name, "BF16", shape, pattern_bf16(n))
    };
    let all_raw = vec![
        tiny("y \"quoted\" \\ name", vec![1; 200]),
        tiny("ünïcödé.bias", vec![1, 1, 1, 1, 1, 1, 7]),
        tiny("x", vec![]),
        tiny("z\n\t", vec![2, 3]),
    ];
    let mut mixed = all_raw.clone();
    mixed.insert(1, OwnedTensor::new("w", "BF16", vec![8, 1024], bf16_data(8192, 4)));
    mixed.push(OwnedTensor::new("v", "BF16", vec![1, 1, 1, 1, 1, 1, 1, 1, 8192], bf16_data(8192, 5)));
    for (what, src) in [("all raw", all_raw), ("mixed", mixed)] {
        write_file(&path, &src, Some(df11::EncodeOptions::default()), None).unwrap_or_else(|e| panic!("{what}: {e}"));
        let ck = Checkpoint::open(&path).unwrap();
        for t in &src {
            let e = ck.tensor(&t.meta.name).unwrap();
            let want = if t.data.len() >= 16384 { "df11" } else { "raw" };
            assert_eq!((e.storage.name(), &e.shape), (want, &t.meta.shape), "{what}: {}", t.meta.name);
            assert!(bits(&ck.decode(&t.meta.name).unwrap()) == bits(&t.data), "{what}: {}", t.meta.name);
        }
    }
}

/// The `header_len` a df11 file records, if any.
fn stored_header_len(path: &Path) -> Option<u64> {
    let (_, meta) = read_st(path);
    let df11: serde_json::Value = serde_json::from_str(&meta.unwrap()["df11"]).unwrap();
    df11.get("header_len").map(|v| v.as_u64().unwrap())
}

/// The header length of a safetensors file.
fn header_len_of(path: &Path) -> u64 {
    u64::from_le_bytes(std::fs::read(path).unwrap()[..8].try_into().unwrap())
}

fn library_tensors() -> Vec<(&'static str, T)> {
    vec![
        ("position_ids", t("I64", &[1, 16], (0..16u64).flat_map(|i| i.to_le_bytes()).collect())),
        ("embed.weight", t("BF16", &[64, 256], bf16_data(64 * 256, 7))),
        ("layer.bias", t("BF16", &[8], bf16_data(8, 8))),
        ("norm.weight", t("BF16", &[256], 0x3F80u16.to_le_bytes().repeat(256))),
        ("head.weight", t("BF16", &[32, 300], bf16_data(32 * 300, 9))),
    ]
}

/// A file the safetensors library wrote comes back from df11 byte for byte,
/// in every layout, and so does a plain copy of it; a file whose header
/// another writer laid out comes back with the same tensors and metadata,
/// but df11's header.
#[test]
fn a_library_written_file_comes_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let src = library_tensors();
    for metadata_last in [false, true] {
        let orig = dir.path().join(format!("orig-{metadata_last}.safetensors"));
        library_style_file(&orig, &src, metadata_last);
        let original = std::fs::read(&orig).unwrap();
        let copy = dir.path().join(format!("copy-{metadata_last}.safetensors"));
        Checkpoint::open(&orig).unwrap().write_to(&copy, &WriteOptions::default()).unwrap();
        assert_eq!(
            std::fs::read(&copy).unwrap() == original,
            !metadata_last,
            "plain copy, metadata last: {metadata_last}"
        );
        for layout in [df11::Layout::Lanes9, df11::Layout::Lanes, df11::Layout::Warp] {
            let c = dir.path().join(format!("c-{metadata_last}-{}.safetensors", layout.name()));
            let r = dir.path().join(format!("r-{metadata_last}-{}.safetensors", layout.name()));
            let encode = Some(df11::EncodeOptions { layout, ..Default::default() });
            Checkpoint::open(&orig).unwrap().write_to(&c, &WriteOptions { encode, ..Default::default() }).unwrap();
            let want_len = (!metadata_last).then(|| header_len_of(&orig));
            assert_eq!(stored_header_len(&c), want_len, "{}", c.display());
            Checkpoint::open(&c).unwrap().write_to(&r, &WriteOptions::default()).unwrap();
            assert_eq!(read_st(&r), read_st(&orig), "{}: tensors and metadata", r.display());
            assert_eq!(std::fs::read(&r).unwrap() == original, !metadata_last, "{}: the whole file", r.display());
            // Compressing the df11 file again keeps the original's length.
            let again = dir.path().join(format!("again-{metadata_last}-{}.safetensors", layout.name()));
            Checkpoint::open(&c).unwrap().write_to(&again, &WriteOptions { encode, ..Default::default() }).unwrap();
            assert_eq!(stored_header_len(&again), want_len);
        }
    }
}

/// A df11 file's recorded header length is a hint: one shorter than the
/// header the restored tensors need, or longer than the room df11 would
/// leave, is ignored (no hole is written, no error), and one between pads
/// the header to it. The tensors come back bit-exact either way.
#[test]
fn a_recorded_header_length_out_of_range_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let src = library_tensors();
    let orig = dir.path().join("orig.safetensors");
    let compact = library_style_file(&orig, &src, false) as u64;
    let c = dir.path().join("c.safetensors");
    let encode = Some(df11::EncodeOptions::default());
    Checkpoint::open(&orig).unwrap().write_to(&c, &WriteOptions { encode, ..Default::default() }).unwrap();
    let (tensors, meta) = read_st(&c);
    let mut df11: serde_json::Value = serde_json::from_str(&meta.as_ref().unwrap()["df11"]).unwrap();
    let mut rewrite = |len: Option<u64>, path: &Path| {
        match len {
            Some(n) => df11["header_len"] = n.into(),
            None => {
                df11.as_object_mut().unwrap().remove("header_len");
            }
        }
        let meta = BTreeMap::from([("df11".to_string(), df11.to_string()), ("format".to_string(), "pt".to_string())]);
        // In the original's data order, which `write_st` (name order) would not keep.
        write_st_in_order(path, src.iter().map(|(n, _)| (*n, &tensors[*n])), Some(&meta));
    };
    let mut restore = |name: &str, len: Option<u64>| -> u64 {
        let damaged = dir.path().join(format!("{name}.df11.safetensors"));
        rewrite(len, &damaged);
        let r = dir.path().join(format!("{name}.safetensors"));
        Checkpoint::open(&damaged).unwrap().write_to(&r, &WriteOptions::default()).unwrap();
        assert_eq!(read_st(&r), read_st(&orig), "{name}");
        header_len_of(&r)
    };
    // Without a recorded length: the room df11 reserves.
    let room = restore("none", None);
    assert!(room > compact + 7, "df11's own room ({room}) is larger than the compact header ({compact})");
    assert_eq!(restore("exact", Some(compact)), compact);
    assert_eq!(restore("padded", Some(compact + 3)), compact + 3);
    assert_eq!(restore("room", Some(room)), room);
    for (name, len) in
        [("short", compact - 1), ("zero", 0), ("past_room", room + 1), ("huge", 1 << 40), ("max", u64::MAX)]
    {
        assert_eq!(restore(name, Some(len)), room, "{name}: {len}");
    }
    // And none of it left a large file behind.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        assert!(e.unwrap().metadata().unwrap().len() < 1 << 20);
    }
}
