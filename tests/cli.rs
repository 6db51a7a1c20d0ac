//! End-to-end tests of the `df11` binary on generated checkpoints.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;

fn sample_tensors(seed: u64) -> BTreeMap<String, T> {
    let mut m = BTreeMap::new();
    m.insert("model.layers.0.mlp.up_proj.weight".into(), t("BF16", &[96, 64], bf16_data(96 * 64, seed)));
    m.insert("model.layers.0.mlp.down_proj.weight".into(), t("BF16", &[64, 96], bf16_data(64 * 96, seed + 1)));
    m.insert("model.norm.weight".into(), t("BF16", &[333], bf16_data(333, seed + 2)));
    m.insert("scalar".into(), t("BF16", &[], bf16_data(1, seed + 3)));
    m.insert("empty".into(), t("BF16", &[0, 4], vec![]));
    m.insert("f32.bias".into(), t("F32", &[5], (0..20u8).collect()));
    m.insert("positions".into(), t("I64", &[3], (0..24u8).rev().collect()));
    m
}

fn meta() -> BTreeMap<String, String> {
    BTreeMap::from([("format".to_string(), "pt".to_string()), ("note".to_string(), "kept \"as is\"".to_string())])
}

#[test]
fn single_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (orig, comp, back) =
        (dir.path().join("m.safetensors"), dir.path().join("c.safetensors"), dir.path().join("b.safetensors"));
    let tensors = sample_tensors(1);
    write_st(&orig, &tensors, Some(&meta()));
    ok(&[&"compress", &orig, &"-o", &comp]);

    // The output is a valid safetensors file: BF16 tensors became U8 vectors
    // under the same names (or stayed as they were, listed as raw, where that
    // would not have been smaller), the rest is byte-identical, metadata is kept.
    let (c, cmeta) = read_st(&comp);
    assert_eq!(c.keys().collect::<Vec<_>>(), tensors.keys().collect::<Vec<_>>());
    let cmeta = cmeta.unwrap();
    assert_eq!(cmeta["format"], "pt");
    let df11: serde_json::Value = serde_json::from_str(&cmeta["df11"]).unwrap();
    assert_eq!(df11["format_version"], 1);
    for (name, t) in &tensors {
        if t.dtype == "BF16" && c[name].dtype == "U8" {
            assert_eq!(c[name].shape, vec![c[name].data.len() as u64]);
            assert_eq!(&c[name].data[..4], b"DF11");
            assert!(c[name].data.len() + 16 <= t.data.len(), "{name}: a container that does not pay was kept");
            assert_eq!(df11["tensors"][name]["shape"], serde_json::json!(t.shape), "{name}");
            assert!(df11["raw"].get(name).is_none(), "{name}");
        } else if t.dtype == "BF16" {
            assert_eq!(&c[name], t);
            assert_eq!(df11["raw"][name], serde_json::json!({"dtype": "BF16", "shape": t.shape}), "{name}");
            assert!(df11["tensors"].get(name).is_none(), "{name}");
        } else {
            assert_eq!(&c[name], t);
        }
    }
    // Too small to gain from a container of about 190 fixed bytes: stored raw.
    for name in ["empty", "scalar"] {
        assert_eq!(c[name].dtype, "BF16", "{name}");
    }
    assert_eq!(df11["tensors"]["model.layers.0.mlp.up_proj.weight"]["shape"], serde_json::json!([96, 64]));
    assert!(c["model.layers.0.mlp.up_proj.weight"].data.len() < 96 * 64 * 2, "no compression happened");

    // The safetensors library itself opens and lists it.
    let bytes = std::fs::read(&comp).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names, tensors.keys().collect::<Vec<_>>());

    ok(&[&"verify", &orig, &comp]);
    ok(&[&"decompress", &comp, &"-o", &back]);
    let bytes = std::fs::read(&back).unwrap();
    assert_eq!(safetensors::SafeTensors::deserialize(&bytes).unwrap().len(), tensors.len());
    let (b, bmeta) = read_st(&back);
    assert_eq!(b, tensors);
    assert_eq!(bmeta, Some(meta()));
}

#[test]
fn sharded_directory_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model");
    std::fs::create_dir_all(src.join("extra")).unwrap();
    let a = sample_tensors(10);
    let mut b = BTreeMap::new();
    b.insert("lm_head.weight".to_string(), t("BF16", &[128, 64], bf16_data(128 * 64, 20)));
    b.insert("model.embed_tokens.weight".to_string(), t("BF16", &[128, 64], bf16_data(128 * 64, 21)));
    b.insert("ids".to_string(), t("I64", &[2], vec![7; 16]));
    write_st(&src.join("model-00001-of-00002.safetensors"), &a, Some(&meta()));
    write_st(&src.join("model-00002-of-00002.safetensors"), &b, None);
    let mut weight_map = serde_json::Map::new();
    for k in a.keys() {
        weight_map.insert(k.clone(), "model-00001-of-00002.safetensors".into());
    }
    for k in b.keys() {
        weight_map.insert(k.clone(), "model-00002-of-00002.safetensors".into());
    }
    let index = serde_json::json!({"metadata": {"total_size": 12345, "other": "x"}, "weight_map": weight_map});
    std::fs::write(src.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::write(src.join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    std::fs::write(src.join("tokenizer.json"), "{\"t\": 1}").unwrap();
    std::fs::write(src.join("extra/notes.txt"), "hello").unwrap();

    let comp = dir.path().join("model-df11");
    ok(&[&"--threads", &"2", &"compress", &src, &"-o", &comp]);
    for f in ["config.json", "tokenizer.json", "extra/notes.txt"] {
        assert_eq!(std::fs::read(src.join(f)).unwrap(), std::fs::read(comp.join(f)).unwrap(), "{f}");
    }
    let cindex: serde_json::Value =
        serde_json::from_slice(&std::fs::read(comp.join("model.safetensors.index.json")).unwrap()).unwrap();
    assert_eq!(cindex["weight_map"], index["weight_map"]);
    assert_eq!(cindex["metadata"]["other"], "x");
    let stored: u64 = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        .iter()
        .map(|s| read_st(&comp.join(s)).0.values().map(|t| t.data.len() as u64).sum::<u64>())
        .sum();
    assert_eq!(cindex["metadata"]["total_size"], stored);

    ok(&[&"verify", &src, &comp]);
    // Replacing a directory needs --force; the result does not depend on the thread count.
    let first = std::fs::read(comp.join("model-00002-of-00002.safetensors")).unwrap();
    let e = fails(&[&"compress", &src, &"-o", &comp]);
    assert!(e.contains("--force"), "{e}");
    ok(&[&"--threads", &"1", &"compress", &src, &"-o", &comp, &"--force"]);
    assert!(std::fs::read(comp.join("model-00002-of-00002.safetensors")).unwrap() == first);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");

    let back = dir.path().join("back");
    ok(&[&"decompress", &comp, &"-o", &back]);
    assert_eq!(read_st(&back.join("model-00001-of-00002.safetensors")), (a, Some(meta())));
    assert_eq!(read_st(&back.join("model-00002-of-00002.safetensors")), (b, None));
    assert_eq!(std::fs::read(back.join("extra/notes.txt")).unwrap(), b"hello");
}

/// Shards the safetensors library wrote come back from `df11 decompress`
/// byte for byte, in a directory as in a file.
#[test]
fn decompress_restores_library_written_shards_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model");
    std::fs::create_dir_all(&src).unwrap();
    let shard = |i: u64| -> Vec<(&'static str, T)> {
        vec![
            (["a.weight", "c.weight"][i as usize], t("BF16", &[96, 64], bf16_data(96 * 64, 40 + i))),
            (["a.bias", "c.bias"][i as usize], t("BF16", &[64], bf16_data(64, 50 + i))),
            (["b.weight", "d.weight"][i as usize], t("BF16", &[64, 200], bf16_data(64 * 200, 60 + i))),
        ]
    };
    let names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    let mut weight_map = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        let tensors = shard(i as u64);
        library_style_file(&src.join(name), &tensors, false);
        for (n, _) in &tensors {
            weight_map.insert(n.to_string(), (*name).into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(src.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let (comp, back) = (dir.path().join("c"), dir.path().join("back"));
    ok(&[&"compress", &src, &"-o", &comp]);
    ok(&[&"decompress", &comp, &"-o", &back]);
    for name in names {
        let (a, b) = (std::fs::read(src.join(name)).unwrap(), std::fs::read(back.join(name)).unwrap());
        assert!(a == b, "{name} differs from the original");
    }
    // A single file too.
    let (one_c, one_back) = (dir.path().join("one.df11.safetensors"), dir.path().join("one.safetensors"));
    ok(&[&"compress", &src.join(names[0]), &"-o", &one_c]);
    ok(&[&"decompress", &one_c, &"-o", &one_back]);
    assert!(std::fs::read(&one_back).unwrap() == std::fs::read(src.join(names[0])).unwrap());
}

/// A Hugging Face cache snapshot is a directory of symbolic links to blobs:
/// its linked shards are compressed (not copied as other files), the index
/// and config are read and copied through their links, and the output holds
/// files, not links.
#[cfg(unix)]
#[test]
fn hugging_face_cache_snapshot_of_links() {
    let dir = tempfile::tempdir().unwrap();
    let (blobs, snap) = (dir.path().join("blobs"), dir.path().join("snapshots/0123abc"));
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    let (a, b) = (sample_tensors(30), sample_tensors(31));
    write_st(&blobs.join("1a"), &a, None);
    write_st(&blobs.join("2b"), &b.into_iter().map(|(k, v)| (format!("b.{k}"), v)).collect(), None);
    let mut weight_map = serde_json::Map::new();
    for k in a.keys() {
        weight_map.insert(k.clone(), "model-00001-of-00002.safetensors".into());
        weight_map.insert(format!("b.{k}"), "model-00002-of-00002.safetensors".into());
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(blobs.join("3c"), index.to_string()).unwrap();
    std::fs::write(blobs.join("4d"), r#"{"model_type": "llama"}"#).unwrap();
    for (blob, name) in [
        ("1a", "model-00001-of-00002.safetensors"),
        ("2b", "model-00002-of-00002.safetensors"),
        ("3c", "model.safetensors.index.json"),
        ("4d", "config.json"),
    ] {
        std::os::unix::fs::symlink(Path::new("../../blobs").join(blob), snap.join(name)).unwrap();
    }
    let comp = dir.path().join("df11");
    ok(&[&"compress", &snap, &"-o", &comp]);
    for name in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "config.json"] {
        assert!(std::fs::symlink_metadata(comp.join(name)).unwrap().file_type().is_file(), "{name}");
    }
    let (c, cmeta) = read_st(&comp.join("model-00001-of-00002.safetensors"));
    assert!(cmeta.unwrap().contains_key("df11"), "the linked shard was not compressed");
    assert_eq!(c["model.layers.0.mlp.up_proj.weight"].dtype, "U8");
    assert_eq!(std::fs::read(comp.join("config.json")).unwrap(), std::fs::read(blobs.join("4d")).unwrap());
    ok(&[&"verify", &snap, &comp]);
}

/// Outputs get the permissions of any new file in their directory (here
/// compared with one made by `File::create`, so whatever the umask), not a
/// temporary file's owner-only ones: others must be able to read a
/// compressed checkpoint.
#[cfg(unix)]
#[test]
fn outputs_get_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let plain = dir.path().join("plain");
    std::fs::File::create(&plain).unwrap();
    let orig = dir.path().join("m.safetensors");
    write_st(&orig, &sample_tensors(4), None);
    let (comp, back) = (dir.path().join("c.safetensors"), dir.path().join("b.safetensors"));
    ok(&[&"compress", &orig, &"-o", &comp]);
    ok(&[&"decompress", &comp, &"-o", &back]);
    for p in [&comp, &back] {
        assert_eq!(mode(p), mode(&plain), "{}", p.display());
    }
}

/// A directory's other files are checked too: each in both, byte for byte
/// (`config.json` as JSON), and each problem named.
#[test]
fn verify_compares_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir_all(model.join("sub")).unwrap();
    write_st(&model.join("model.safetensors"), &sample_tensors(6), None);
    std::fs::write(model.join("config.json"), r#"{"model_type": "llama", "hidden_size": 64}"#).unwrap();
    std::fs::write(model.join("sub/tokenizer.json"), "{\"t\": 1}").unwrap();
    let comp = dir.path().join("c");
    ok(&[&"compress", &model, &"-o", &comp]);
    let o = ok(&[&"verify", &model, &comp]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("and 2 other files"), "{o:?}");
    // The same config, written another way: still the same.
    std::fs::write(comp.join("config.json"), "{\n  \"hidden_size\": 64,\n  \"model_type\": \"llama\"\n}\n").unwrap();
    ok(&[&"verify", &model, &comp]);
    std::fs::write(comp.join("config.json"), r#"{"model_type": "llama", "hidden_size": 65}"#).unwrap();
    assert!(fails(&[&"verify", &model, &comp]).contains("file config.json differs"));
    std::fs::copy(model.join("config.json"), comp.join("config.json")).unwrap();
    std::fs::write(comp.join("sub/tokenizer.json"), "{\"t\": 2}").unwrap();
    let e = fails(&[&"verify", &model, &comp]);
    assert!(e.contains("file sub/tokenizer.json differs (first at byte 6)"), "{e}");
    std::fs::write(comp.join("sub/tokenizer.json"), "{\"t\": 1} ").unwrap();
    let e = fails(&[&"verify", &model, &comp]);
    assert!(e.contains("file sub/tokenizer.json differs (first at byte 8)"), "{e}");
    std::fs::remove_file(comp.join("sub/tokenizer.json")).unwrap();
    std::fs::write(comp.join("extra.txt"), "x").unwrap();
    let e = fails(&[&"verify", &model, &comp]);
    assert!(e.contains("file sub/tokenizer.json is missing from") && e.contains("file extra.txt is not in"), "{e}");
}

#[test]
fn verify_names_the_tensor_that_differs() {
    let dir = tempfile::tempdir().unwrap();
    let (orig, comp) = (dir.path().join("m.safetensors"), dir.path().join("c.safetensors"));
    let mut tensors = sample_tensors(2);
    write_st(&orig, &tensors, None);
    ok(&[&"compress", &orig, &"-o", &comp]);

    // One bit changed in the original.
    let changed = dir.path().join("changed.safetensors");
    tensors.get_mut("model.norm.weight").unwrap().data[7] ^= 0x10;
    write_st(&changed, &tensors, None);
    let e = fails(&[&"verify", &changed, &comp]);
    assert!(e.contains("model.norm.weight") && e.contains("differs"), "{e}");

    // One bit changed in a compressed tensor's bytes.
    let (mut c, cmeta) = read_st(&comp);
    let name = "model.layers.0.mlp.up_proj.weight";
    let len = c[name].data.len();
    c.get_mut(name).unwrap().data[len - 40] ^= 0x01;
    let corrupt = dir.path().join("corrupt.safetensors");
    write_st(&corrupt, &c, cmeta.as_ref());
    let e = fails(&[&"verify", &orig, &corrupt]);
    assert!(e.contains(name), "{e}");

    // A tensor missing on one side, an extra one on the other.
    let mut more = sample_tensors(2);
    more.insert("extra".into(), t("F32", &[1], vec![0; 4]));
    let more_path = dir.path().join("more.safetensors");
    write_st(&more_path, &more, None);
    let e = fails(&[&"verify", &more_path, &comp]);
    assert!(e.contains("extra") && e.contains("missing"), "{e}");
    let e = fails(&[&"verify", &orig, &more_path]);
    assert!(e.contains("extra"), "{e}");
}

#[test]
fn output_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (orig, comp) = (dir.path().join("m.safetensors"), dir.path().join("c.safetensors"));
    write_st(&orig, &sample_tensors(3), None);
    let orig_bytes = std::fs::read(&orig).unwrap();

    std::fs::write(&comp, b"precious").unwrap();
    let e = fails(&[&"compress", &orig, &"-o", &comp]);
    assert!(e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&comp).unwrap(), b"precious");
    ok(&[&"-q", &"compress", &orig, &"-o", &comp, &"--force"]);
    ok(&[&"verify", &orig, &comp]);

    // The input is never overwritten, even with --force.
    let e = fails(&[&"compress", &orig, &"-o", &orig, &"--force"]);
    assert!(e.contains("input"), "{e}");
    let e = fails(&[&"decompress", &comp, &"-o", &comp, &"--force"]);
    assert!(e.contains("input"), "{e}");
    assert_eq!(std::fs::read(&orig).unwrap(), orig_bytes);

    // An output directory that cannot be written to.
    let e = fails(&[&"compress", &orig, &"-o", &orig.join("sub.safetensors")]);
    assert!(e.contains("m.safetensors"), "{e}");
    let e = fails(&[&"compress", &orig, &"-o", &dir.path().join("no/such/dir/x.safetensors")]);
    assert!(e.contains("no/such/dir"), "{e}");

    // Nothing but the outputs was left behind.
    let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["c.safetensors", "m.safetensors"]);
}

#[test]
fn bad_inputs_give_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let e = fails(&[&"compress", &junk, &"-o", &dir.path().join("o.safetensors")]);
    assert!(e.contains("junk.safetensors"), "{e}");
    let e = fails(&[&"inspect", &dir.path().join("missing.safetensors")]);
    assert!(e.contains("missing.safetensors"), "{e}");
    // A header pointing past the end of the file.
    let mut m = BTreeMap::new();
    m.insert("w".to_string(), t("BF16", &[4], vec![0; 8]));
    let short = dir.path().join("short.safetensors");
    write_st(&short, &m, None);
    let bytes = std::fs::read(&short).unwrap();
    std::fs::write(&short, &bytes[..bytes.len() - 2]).unwrap();
    let e = fails(&[&"inspect", &short]);
    assert!(e.contains("short.safetensors") && e.contains("tensor w"), "{e}");
}

#[test]
fn gpu_flag_reports_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (orig, comp) = (dir.path().join("m.safetensors"), dir.path().join("c.safetensors"));
    write_st(&orig, &sample_tensors(4), None);
    ok(&[&"compress", &orig, &"-o", &comp]);
    // On a machine with a GPU this decodes there; elsewhere the refusal names the GPU.
    let o = run(&[&"verify", &"--gpu", &orig, &comp]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() || (o.status.code() == Some(1) && err.contains("GPU")), "{err}");
    let back = dir.path().join("b.safetensors");
    let o = run(&[&"decompress", &"--gpu", &comp, &"-o", &back]);
    if o.status.success() {
        assert_eq!(read_st(&back).0, sample_tensors(4));
    } else {
        assert!(String::from_utf8_lossy(&o.stderr).contains("GPU"));
        assert!(!back.exists());
    }
}

#[test]
fn inspect_reports_sizes_and_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (orig, comp) = (dir.path().join("m.safetensors"), dir.path().join("c.safetensors"));
    write_st(&orig, &sample_tensors(5), None);
    ok(&[&"compress", &orig, &"-o", &comp]);
    let o = ok(&[&"inspect", &comp, &"--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "df11");
    assert_eq!(v["format_version"], 1);
    // The default layout, lanes9, needs container version 3.
    assert_eq!(v["container_version"], 3);
    let rows = v["tensors"].as_array().unwrap();
    assert_eq!(rows.len(), 7);
    let up = rows.iter().find(|r| r["name"] == "model.layers.0.mlp.up_proj.weight").unwrap();
    assert_eq!(up["shape"], serde_json::json!([96, 64]));
    assert_eq!(up["storage"], "df11");
    assert_eq!(up["layout"], "lanes9");
    let (bpw, bound) = (up["bits_per_weight"].as_f64().unwrap(), up["bound_bits_per_weight"].as_f64().unwrap());
    assert!(bound > 8.0 && bound < 12.0 && bpw >= bound - 0.01, "bpw {bpw} bound {bound}");
    assert_eq!(v["totals"]["tensors"], 7);
    let text = String::from_utf8(ok(&[&"inspect", &comp]).stdout).unwrap();
    assert!(text.contains("model.norm.weight") && text.contains("total:"), "{text}");
}

/// A compress killed midway leaves nothing under the output name.
#[test]
fn killed_run_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let orig = dir.path().join("big.safetensors");
    let mut m = BTreeMap::new();
    for i in 0..24 {
        m.insert(format!("layer.{i:02}.weight"), t("BF16", &[1024, 1024], bf16_data(1 << 20, i)));
    }
    write_st(&orig, &m, None);
    let out = dir.path().join("out.safetensors");
    let mut child = df11().args(["--threads", "1", "compress"]).arg(&orig).arg("-o").arg(&out).spawn().unwrap();
    // Wait until it is writing its temporary, then kill it.
    let started = std::time::Instant::now();
    loop {
        let writing = std::fs::read_dir(dir.path())
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().contains("df11-tmp"));
        if writing || started.elapsed().as_secs() > 30 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let finished = child.try_wait().unwrap().is_some();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!finished, "compress finished before it could be killed; make the input larger");
    assert!(!out.exists(), "a killed run left {}", out.display());
    assert!(!Path::new(&out).with_extension("").exists());
}

/// Stopped by SIGINT (Ctrl-C) or SIGTERM while writing, a run exits with
/// status 130 and leaves neither its output nor its hidden temporary, for a
/// file and for a directory.
#[cfg(unix)]
#[test]
fn interrupted_run_removes_its_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let mut m = BTreeMap::new();
    for i in 0..24 {
        m.insert(format!("layer.{i:02}.weight"), t("BF16", &[1024, 1024], bf16_data(1 << 20, i)));
    }
    write_st(&model.join("model.safetensors"), &m, None);
    let file = model.join("model.safetensors");
    for (signal, input, out) in
        [("-INT", &file, dir.path().join("out.safetensors")), ("-TERM", &model, dir.path().join("out"))]
    {
        let mut child = df11().args(["--threads", "1", "compress"]).arg(input).arg("-o").arg(&out).spawn().unwrap();
        let temporaries = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains("df11-tmp"))
                .count()
        };
        let started = std::time::Instant::now();
        while temporaries() == 0 && started.elapsed().as_secs() < 30 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(child.try_wait().unwrap().is_none(), "compress finished before the signal; make the input larger");
        let sent = std::process::Command::new("kill").arg(signal).arg(child.id().to_string()).status().unwrap();
        assert!(sent.success());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "{signal}: {status}");
        assert!(!out.exists(), "{signal} left {}", out.display());
        assert_eq!(temporaries(), 0, "{signal} left a temporary");
    }
}

/// Weights in another format beside the safetensors files (a
/// `pytorch_model.bin`) are copied as they were, and said to be; configs
/// and tokenizers alone are not worth a word.
#[test]
fn large_other_files_are_said() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    write_st(&model.join("model.safetensors"), &sample_tensors(5), None);
    std::fs::write(model.join("config.json"), "{}").unwrap();
    let quiet = |o: std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let err = quiet(ok(&[&"compress", &model, &"-o", &dir.path().join("a")]));
    assert!(!err.contains("warning"), "{err}");
    // Sparse: 64 MiB of zeros that take no disk.
    std::fs::File::create(model.join("pytorch_model.bin")).unwrap().set_len(64 << 20).unwrap();
    let err = quiet(ok(&[&"compress", &model, &"-o", &dir.path().join("b")]));
    assert!(
        err.contains("warning: 2 other files (64.0 MiB) copied as they were, the largest pytorch_model.bin (64.0 MiB)"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(dir.path().join("b/pytorch_model.bin")).unwrap().len(), 64 << 20);
}

/// A checkpoint without BF16 tensors (an F32 or F16 model) is written as it
/// was, with a warning that says why it is no smaller, and no BF16 figure.
#[test]
fn no_bf16_tensors_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let (orig, comp) = (dir.path().join("f32.safetensors"), dir.path().join("c.safetensors"));
    let m = BTreeMap::from([
        ("w".to_string(), t("F32", &[64], (0..=255u8).collect())),
        ("h".to_string(), t("F16", &[8], vec![0x3c; 16])),
    ]);
    write_st(&orig, &m, None);
    let err = String::from_utf8_lossy(&ok(&[&"compress", &orig, &"-o", &comp]).stderr).into_owned();
    assert!(err.contains("no BF16 tensors, so nothing was compressed"), "{err}");
    assert!(!err.contains("bits/weight"), "{err}");
    assert_eq!(read_st(&comp).0, m);
    let quiet = ok(&[&"-q", &"compress", &orig, &"-o", &comp, &"--force"]);
    assert!(quiet.stderr.is_empty(), "{}", String::from_utf8_lossy(&quiet.stderr));
}

#[test]
fn bench_runs_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let orig = dir.path().join("m.safetensors");
    write_st(&orig, &sample_tensors(6), None);
    let o = ok(&[&"--threads", &"2", &"bench", &orig, &"--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.is_object(), "{v}");
    let e = fails(&[&"bench", &dir.path().join("missing.safetensors")]);
    assert!(e.contains("missing.safetensors"), "{e}");
}

/// df11 metadata whose shape claims far more elements than its container holds
/// (or more than a u64 counts) is an error when the file is opened, before a
/// decode buffer of that size is allocated. Found while writing the
/// `checkpoint_read` fuzz target, which aborted (allocation) and panicked
/// (overflow) on these inputs before the fix.
#[test]
fn huge_metadata_shape_is_rejected_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let container = df11::compress_bits(&[0x3F80, 0xC000, 0x0001, 0x7F80, 0x8000, 0x3F00, 0x4049]).to_bytes();
    for (name, shape) in [("huge", "[1000000000000]"), ("overflow", "[4294967296,4294967296,16]"), ("eight", "[8]")] {
        let path = dir.path().join(format!("{name}.safetensors"));
        let mut m = BTreeMap::new();
        m.insert("w".to_string(), t("U8", &[container.len() as u64], container.clone()));
        let df11_meta = format!(r#"{{"format_version":1,"tensors":{{"w":{{"dtype":"BF16","shape":{shape}}}}}}}"#);
        write_st(&path, &m, Some(&BTreeMap::from([("df11".to_string(), df11_meta)])));
        let e = fails(&[&"decompress", &path, &"-o", &dir.path().join(format!("{name}.out.safetensors"))]);
        assert!(e.contains(&format!("{name}.safetensors")) && e.contains("tensor w"), "{e}");
    }
}

/// A full disk: the shell caps the size of files df11 may write (`ulimit -f`)
/// and ignores SIGXFSZ, so a write past the cap fails with an I/O error as on
/// a full file system. df11 must report it, exit 1, and leave neither the
/// output nor its temporary behind.
#[cfg(unix)]
#[test]
fn full_disk_is_an_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let orig = dir.path().join("m.safetensors");
    write_st(&orig, &sample_tensors(7), None);
    let out = dir.path().join("c.safetensors");
    // 8 blocks of 512 bytes: well under the compressed size of the sample.
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"trap '' XFSZ; ulimit -f 8 && exec "$0" compress "$1" -o "$2""#)
        .arg(env!("CARGO_BIN_EXE_df11"))
        .arg(&orig)
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "expected exit 1, got {:?}: {err}", o.status);
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.lines().last().unwrap_or_default().starts_with("df11: error: "), "{err}");
    let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["m.safetensors"], "a failed write left files behind");
}

#[test]
fn segment_rows_option_is_stored_and_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let orig = dir.path().join("m.safetensors");
    let tensors = sample_tensors(5);
    write_st(&orig, &tensors, None);
    // R = 1 in the warp layout: in the lanes layout, 32 offsets and 32
    // padded words per 256 weights cost as much as raw bf16 (below).
    for (rows, layout) in [("1", "warp"), ("3", "lanes"), ("256", "lanes")] {
        let (comp, back) = (dir.path().join(format!("c{rows}.safetensors")), dir.path().join(format!("b{rows}.st")));
        ok(&[&"compress", &orig, &"-o", &comp, &"--segment-rows", &rows, &"--layout", &layout]);
        let (c, _) = read_st(&comp);
        let t = df11::CompressedTensor::from_bytes(&c["model.layers.0.mlp.up_proj.weight"].data).unwrap();
        assert_eq!((t.segment_rows.to_string().as_str(), t.layout.name()), (rows, layout));
        ok(&[&"verify", &orig, &comp]);
        ok(&[&"decompress", &comp, &"-o", &back]);
        assert_eq!(read_st(&back).0, tensors, "R = {rows}");
    }
    let comp = dir.path().join("c1-lanes.safetensors");
    ok(&[&"compress", &orig, &"-o", &comp, &"--segment-rows", &"1", &"--layout", &"lanes"]);
    assert_eq!(read_st(&comp).0["model.layers.0.mlp.up_proj.weight"].dtype, "BF16", "stored raw");
    ok(&[&"verify", &orig, &comp]);
    for bad in ["0", "65537", "x"] {
        // A usage error: clap's exit status 2 and a message naming the option.
        let out = run(&[&"compress", &orig, &"-o", &dir.path().join("bad.safetensors"), &"--segment-rows", &bad]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--segment-rows"));
        assert!(!dir.path().join("bad.safetensors").exists());
    }
}

#[test]
fn layout_option_is_stored_and_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let orig = dir.path().join("m.safetensors");
    let tensors = sample_tensors(6);
    write_st(&orig, &tensors, None);
    for (layout, want) in
        [("warp", df11::Layout::Warp), ("lanes", df11::Layout::Lanes), ("lanes9", df11::Layout::Lanes9)]
    {
        let (comp, back) = (dir.path().join(format!("c{layout}.st")), dir.path().join(format!("b{layout}.st")));
        ok(&[&"compress", &orig, &"-o", &comp, &"--layout", &layout, &"--segment-rows", &"2"]);
        let (c, _) = read_st(&comp);
        let t = df11::CompressedTensor::from_bytes(&c["model.layers.0.mlp.up_proj.weight"].data).unwrap();
        assert_eq!(t.layout, want);
        ok(&[&"verify", &orig, &comp]);
        ok(&[&"decompress", &comp, &"-o", &back]);
        assert_eq!(read_st(&back).0, tensors, "{layout} layout");
        let v: serde_json::Value = serde_json::from_slice(&ok(&[&"inspect", &comp, &"--json"]).stdout).unwrap();
        assert_eq!(v["container_version"], want.min_version());
        let rows = v["tensors"].as_array().unwrap();
        // Lanes9 keeps the lanes layout for a tensor where that is smaller.
        let allowed: &[&str] = if want == df11::Layout::Lanes9 { &["lanes9", "lanes"] } else { &[layout] };
        let df11_rows: Vec<_> = rows.iter().filter(|r| r["storage"] == "df11").collect();
        assert!(df11_rows.iter().all(|r| allowed.iter().any(|a| r["layout"] == *a)), "{rows:?}");
        assert!(df11_rows.iter().any(|r| r["layout"] == layout), "{rows:?}");
        let text = String::from_utf8(ok(&[&"inspect", &comp]).stdout).unwrap();
        assert!(text.contains(&format!("df11 ({layout})")), "{text}");
    }
    let out = run(&[&"compress", &orig, &"-o", &dir.path().join("bad.st"), &"--layout", &"rows"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--layout"));
}

/// Tiny BF16 tensors (1, 7 and 384 weights of every exponent and NaN payload,
/// an empty one) are stored raw next to a compressed large one: `compress`
/// counts them, `inspect` shows them as raw at 16 bits/weight, `verify`
/// passes and `decompress` gives every tensor back byte for byte.
#[test]
fn tiny_tensors_are_stored_raw_and_inspected_as_raw() {
    let dir = tempfile::tempdir().unwrap();
    let (orig, comp, back) =
        (dir.path().join("m.safetensors"), dir.path().join("c.safetensors"), dir.path().join("b.safetensors"));
    // Every exponent equally often, with NaN payloads, infinities and signed zeros first.
    let patterns = |n: usize| -> Vec<u8> {
        let special = [0x7F81u16, 0xFFFF, 0x7FC1, 0x7F80, 0xFF80, 0x8000, 0x0001];
        (0..n)
            .map(|i| special.get(i).copied().unwrap_or((((i as u16 * 97) % 256) << 7) | ((i as u16 * 37) & 0x7F)))
            .flat_map(u16::to_le_bytes)
            .collect()
    };
    let mut m = BTreeMap::new();
    m.insert("a.bias".to_string(), t("BF16", &[1], patterns(1)));
    m.insert("b.bias".to_string(), t("BF16", &[7], patterns(7)));
    m.insert("c.norm".to_string(), t("BF16", &[384], patterns(384)));
    m.insert("d.empty".to_string(), t("BF16", &[0], vec![]));
    m.insert("e.weight".to_string(), t("BF16", &[128, 256], bf16_data(128 * 256, 9)));
    write_st(&orig, &m, None);
    let o = ok(&[&"compress", &orig, &"-o", &comp]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("5 tensors (4 BF16 stored raw, too small to gain)"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&ok(&[&"inspect", &comp, &"--json"]).stdout).unwrap();
    for r in v["tensors"].as_array().unwrap() {
        let name = r["name"].as_str().unwrap();
        let orig_bytes = r["original_bytes"].as_u64().unwrap();
        assert!(r["stored_bytes"].as_u64().unwrap() <= orig_bytes + 16, "{name}");
        if name == "e.weight" {
            assert_eq!((&r["storage"], &r["layout"]), (&"df11".into(), &"lanes9".into()));
            assert!(r["bits_per_weight"].as_f64().unwrap() < 12.0, "{r}");
            continue;
        }
        assert_eq!(r["storage"], "raw", "{name}");
        assert_eq!(r["layout"], serde_json::Value::Null, "{name}");
        assert_eq!(r["stored_bytes"].as_u64().unwrap(), orig_bytes, "{name}");
        if orig_bytes > 0 {
            assert_eq!(r["bits_per_weight"].as_f64().unwrap(), 16.0, "{name}");
        }
    }
    let text = String::from_utf8(ok(&[&"inspect", &comp]).stdout).unwrap();
    let row = text.lines().find(|l| l.starts_with("c.norm")).unwrap();
    assert!(row.contains(" raw ") && row.contains("16.000"), "{text}");
    ok(&[&"verify", &orig, &comp]);
    ok(&[&"decompress", &comp, &"-o", &back]);
    let (b, bmeta) = read_st(&back);
    assert!(b == m && bmeta.is_none(), "decompress changed a tensor");
}

/// A tensor large enough to be decoded in several runs as it is written:
/// a corrupt byte near its end is only found by the checksums after the
/// first runs are on disk, and the command still fails with nothing left
/// behind, neither the output nor its temporary.
#[test]
fn decompress_fails_cleanly_when_a_late_run_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (orig, comp) = (dir.path().join("m.safetensors"), dir.path().join("c.safetensors"));
    let name = "model.embed_tokens.weight";
    let mut m = BTreeMap::new();
    m.insert(name.to_string(), t("BF16", &[1536, 1024], bf16_data(1536 * 1024, 5)));
    write_st(&orig, &m, None);
    ok(&[&"compress", &orig, &"-o", &comp]);
    let back = dir.path().join("back.safetensors");
    ok(&[&"decompress", &comp, &"-o", &back]);
    assert_eq!(read_st(&back).0, m, "the runs are written in order");
    std::fs::remove_file(&back).unwrap();

    let (mut c, cmeta) = read_st(&comp);
    let len = c[name].data.len();
    c.get_mut(name).unwrap().data[len - 100] ^= 0x04;
    let corrupt = dir.path().join("corrupt.safetensors");
    write_st(&corrupt, &c, cmeta.as_ref());
    let e = fails(&[&"decompress", &corrupt, &"-o", &back]);
    assert!(e.contains("corrupt.safetensors") && e.contains(name) && e.contains("checksum"), "{e}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 3, "only the three inputs are left: {left:?}");
}
