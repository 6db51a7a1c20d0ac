//! Reading DFloat11 checkpoints: every fixture in `tests/fixtures/dfloat11/`
//! (the six arrays of one module, written by DFloat11's own encoder) must
//! decode to its `.bf16.safetensors` reference, bit for bit.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Copies a fixture file to `dst`, un-gzipping `.gz` ones.
fn copy_fixture(name: &str, dst: &Path) {
    std::fs::write(dst, dfloat11_fixture_bytes(name)).unwrap();
}

/// Builds a DFloat11 checkpoint directory for `case` under `dir` with `config`
/// as its config.json (plus `dfloat11_config`). Returns (checkpoint, reference file).
fn checkpoint(dir: &Path, case: &str, mut config: Value) -> (PathBuf, PathBuf) {
    let j = dfloat11_case_json(case);
    let ckpt = dir.join(format!("{case}-dfloat11"));
    std::fs::create_dir_all(&ckpt).unwrap();
    config["dfloat11_config"] = j["dfloat11_config"].clone();
    std::fs::write(ckpt.join("config.json"), config.to_string()).unwrap();
    copy_fixture(&format!("{case}.df11.safetensors"), &ckpt.join("model.safetensors"));
    let reference = dir.join(format!("{case}.bf16.safetensors"));
    copy_fixture(&format!("{case}.bf16.safetensors"), &reference);
    (ckpt, reference)
}

fn shapes_file(dir: &Path, case: &str) -> PathBuf {
    let j = dfloat11_case_json(case);
    let map: serde_json::Map<String, Value> = j["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap().to_string(), w["shape"].clone()))
        .collect();
    let p = dir.join(format!("{case}.shapes.json"));
    std::fs::write(&p, Value::Object(map).to_string()).unwrap();
    p
}

#[test]
fn every_fixture_decodes_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for case in DFLOAT11_CASES {
        let (ckpt, reference) = checkpoint(dir.path(), case, json!({}));
        let shapes = shapes_file(dir.path(), case);
        let out = dir.path().join(format!("{case}-plain"));
        ok(&[&"decompress", &ckpt, &"-o", &out, &"--shapes", &shapes]);
        let (got, _) = read_st(&out.join("model.safetensors"));
        let (want, _) = read_st(&reference);
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{case}");
        for (name, w) in &want {
            assert_eq!(got[name].dtype, "BF16", "{case} {name}");
            assert_eq!(got[name].shape, w.shape, "{case} {name}");
            assert!(got[name].data == w.data, "{case} {name}: bits differ");
        }
        // The plain output has no DFloat11 config left.
        let cfg: Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        assert!(cfg.get("dfloat11_config").is_none(), "{case}");
        ok(&[&"verify", &reference, &ckpt, &"--shapes", &shapes]);
    }
}

#[test]
fn shapes_from_a_llama_config() {
    let dir = tempfile::tempdir().unwrap();
    // realistic_multi: gate/up [384, 256], down [256, 384].
    let config = json!({"model_type": "llama", "hidden_size": 256, "intermediate_size": 384,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000});
    let (ckpt, reference) = checkpoint(dir.path(), "realistic_multi", config);
    ok(&[&"verify", &reference, &ckpt]);
    // Straight to df11, and back.
    let df11 = dir.path().join("df11");
    ok(&[&"compress", &ckpt, &"-o", &df11]);
    ok(&[&"verify", &reference, &df11]);
    let o = ok(&[&"inspect", &ckpt, &"--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "dfloat11");
    assert_eq!(v["tensors"].as_array().unwrap().len(), 3);
    assert!(v["totals"]["bits_per_weight"].as_f64().unwrap() < 13.0);
}

#[test]
fn unknown_shapes_become_vectors_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, reference) = checkpoint(dir.path(), "gaussian_small", json!({}));
    let out = dir.path().join("plain");
    let o = ok(&[&"decompress", &ckpt, &"-o", &out]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning"));
    let (got, _) = read_st(&out.join("model.safetensors"));
    let (want, _) = read_st(&reference);
    for (name, w) in &want {
        assert_eq!(got[name].shape, vec![w.data.len() as u64 / 2]);
        assert!(got[name].data == w.data, "{name}");
    }
    // A shape that does not fit is an error naming the tensor.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"model.layers.0.mlp.up_proj.weight": [3, 3]}"#).unwrap();
    let e = fails(&[&"decompress", &ckpt, &"-o", &dir.path().join("x"), &"--shapes", &bad]);
    assert!(e.contains("up_proj"), "{e}");
}

#[test]
fn corrupt_modules_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, _) = checkpoint(dir.path(), "realistic_multi", json!({}));
    let shapes = shapes_file(dir.path(), "realistic_multi");
    let file = ckpt.join("model.safetensors");
    let (orig, meta) = read_st(&file);
    type Corruption = (&'static str, fn(&mut Vec<u8>));
    let corruptions: [Corruption; 5] = [
        ("gaps", |d| d[320] ^= 0x80),                      // block 1's start offset
        ("output_positions", |d| d[4] ^= 1),               // block 1's first element
        ("luts", |d| d.truncate(d.len() - 1)),             // not whole rows
        ("encoded_exponent", |d| d.truncate(d.len() - 5)), // stream overrun
        ("sign_mantissa", |d| d.truncate(d.len() - 1)),    // element count disagrees
    ];
    for (array, corrupt) in corruptions {
        let mut t = orig.clone();
        let name = format!("model.layers.0.mlp.{array}");
        let entry = t.get_mut(&name).unwrap();
        corrupt(&mut entry.data);
        entry.shape = vec![entry.data.len() as u64];
        write_st(&file, &t, meta.as_ref());
        let e = fails(&[&"decompress", &ckpt, &"-o", &dir.path().join(array), &"--shapes", &shapes]);
        assert!(e.contains("model.layers.0.mlp") && e.contains("model.safetensors"), "{array}: {e}");
    }
}

#[test]
fn the_checkpoint_api_reads_every_fixture() {
    use df11::checkpoint::{Checkpoint, Kind, OpenOptions, Storage};
    let dir = tempfile::tempdir().unwrap();
    for case in DFLOAT11_CASES {
        let (ckpt, reference) = checkpoint(dir.path(), case, json!({}));
        let shapes = shapes_file(dir.path(), case);
        let ck = Checkpoint::open_with(&ckpt, &OpenOptions { shapes_file: Some(&shapes), warn: None }).unwrap();
        assert_eq!(ck.kind(), Kind::Dfloat11, "{case}");
        let (want, _) = read_st(&reference);
        let listed = ck.tensors();
        let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, want.keys().map(String::as_str).collect::<Vec<_>>(), "{case}");
        let module = dfloat11_case_json(case)["module"].as_str().unwrap().to_string();
        for t in &listed {
            let w = &want[&t.name];
            assert_eq!((t.dtype.as_str(), &t.shape), ("BF16", &w.shape), "{case} {}", t.name);
            assert_eq!(t.storage, Storage::Dfloat11 { module: module.clone() }, "{case} {}", t.name);
            assert_eq!(t.decoded_bytes, w.data.len() as u64);
            assert!(ck.decode(&t.name).unwrap() == w.data, "{case} {}: bits differ", t.name);
        }
        // Stored bytes are shared out over the module's weights.
        let stored: u64 = listed.iter().map(|t| t.stored_bytes).sum();
        let module_bytes: u64 = ck.units().map(|(_, u)| u.stored_bytes()).sum();
        assert!(stored <= module_bytes && stored + listed.len() as u64 >= module_bytes, "{case}");
        // Grouped by block: each fixture is one module, in block 0 or (an
        // embedding or head) in the rest group.
        let g = ck.block_groups();
        let total: u64 = want.values().map(|w| w.data.len() as u64).sum();
        let group = match df11::checkpoint::block_of(&format!("{module}.x")) {
            Some(b) => {
                assert_eq!(g.blocks.len(), 1, "{case}");
                assert_eq!(g.blocks[0].block.as_ref(), Some(&b));
                assert!(g.rest.members.is_empty());
                assert_eq!(g.max_block_bytes(), total, "{case}");
                assert_eq!(g.max_block_elements(), total / 2, "{case}");
                &g.blocks[0]
            }
            None => {
                assert!(g.blocks.is_empty() && g.max_block_bytes() == 0, "{case}");
                assert_eq!(g.rest.bytes, total, "{case}");
                &g.rest
            }
        };
        let out = ck.decode_group(group).unwrap();
        let expect: Vec<u8> = group.members.iter().flat_map(|m| want[&m.name].data.clone()).collect();
        assert!(out == expect, "{case}: group bits differ");
        // DFloat11 tensors are not df11 containers: the GPU group refuses them by name.
        let e = ck.compressed_group(&[names[0]]).unwrap_err().to_string();
        assert!(e.contains(names[0]), "{e}");
    }
}

#[test]
fn the_checkpoint_api_reports_corrupt_modules_by_name() {
    use df11::checkpoint::{Checkpoint, Error, OpenOptions};
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, _) = checkpoint(dir.path(), "gaussian_small", json!({}));
    let file = ckpt.join("model.safetensors");
    let (mut t, meta) = read_st(&file);
    let module = dfloat11_case_json("gaussian_small")["module"].as_str().unwrap().to_string();
    let gaps = t.get_mut(&format!("{module}.gaps")).unwrap();
    gaps.data[0] ^= 0x80;
    write_st(&file, &t, meta.as_ref());
    let ck = Checkpoint::open_with(&ckpt, &OpenOptions::default()).unwrap();
    let name = ck.tensors()[0].name.clone();
    match ck.decode(&name) {
        Err(e @ Error::Module { .. }) => {
            let s = e.to_string();
            assert!(s.contains(&module) && s.contains("model.safetensors"), "{s}");
        }
        other => panic!("expected a module error, got {other:?}"),
    }
}
