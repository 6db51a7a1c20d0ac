//! What a checkpoint path is: a single `.safetensors` file or a directory
//! (possibly sharded with a `*.safetensors.index.json`).

use super::error::{IoContext, Result, at};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// What an input path turned out to be.
pub enum Input {
    /// One safetensors file.
    File(PathBuf),
    /// A checkpoint directory.
    Dir(DirInput),
}

/// A checkpoint directory, split into what df11 rewrites and what it copies.
pub struct DirInput {
    /// The directory.
    pub root: PathBuf,
    /// Safetensors files, relative to `root`, sorted.
    pub shards: Vec<String>,
    /// The shard index (file name relative to `root`, parsed JSON), if any.
    pub index: Option<(String, Value)>,
    /// Every other file, relative to `root` (config, tokenizer, ...), copied as is.
    pub others: Vec<PathBuf>,
}

impl Input {
    /// Classifies `path`.
    pub fn open(path: &Path) -> Result<Input> {
        let meta = fs::metadata(path).ctx("cannot read", path)?;
        if !meta.is_dir() {
            return Ok(Input::File(path.to_path_buf()));
        }
        let mut shards = Vec::new();
        let mut index = None;
        let mut others = Vec::new();
        for entry in fs::read_dir(path).ctx("cannot list", path)? {
            let entry = entry.ctx("cannot list", path)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Through symbolic links: a Hugging Face cache snapshot is a
            // directory of links to its blobs.
            let is_file = fs::metadata(entry.path()).ctx("cannot read", &entry.path())?.is_file();
            if is_file && name.ends_with(".safetensors") {
                shards.push(name);
            } else if is_file && name.ends_with(".safetensors.index.json") {
                if index.is_some() {
                    return Err(at(
                        path,
                        "more than one *.safetensors.index.json; df11 handles one checkpoint per directory",
                    ));
                }
                let p = entry.path();
                let v: Value = serde_json::from_slice(&fs::read(&p).ctx("cannot read", &p)?)
                    .map_err(|e| at(&p, format!("not valid JSON: {e}")))?;
                index = Some((name, v));
            } else {
                collect_files(path, Path::new(&name), &mut others)?;
            }
        }
        if let Some((name, v)) = &index {
            let map = v.get("weight_map").and_then(Value::as_object);
            let index_path = path.join(name);
            let map = map.ok_or_else(|| at(&index_path, "no weight_map object"))?;
            for shard in map.values() {
                let shard = shard.as_str().ok_or_else(|| at(&index_path, "weight_map values must be file names"))?;
                if !shards.iter().any(|s| s == shard) {
                    return Err(at(&index_path, format!("lists shard {shard}, which is not in the directory")));
                }
            }
        }
        shards.sort();
        others.sort();
        if shards.is_empty() {
            return Err(at(path, "no .safetensors files in this directory"));
        }
        Ok(Input::Dir(DirInput { root: path.to_path_buf(), shards, index, others }))
    }

    /// The safetensors files to process, as (absolute path, name relative to the input).
    pub fn files(&self) -> Vec<(PathBuf, String)> {
        match self {
            Input::File(p) => vec![(p.clone(), String::new())],
            Input::Dir(d) => d.shards.iter().map(|s| (d.root.join(s), s.clone())).collect(),
        }
    }
}

fn collect_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let full = root.join(rel);
    let meta = fs::metadata(&full).ctx("cannot read", &full)?;
    if meta.is_dir() {
        for entry in fs::read_dir(&full).ctx("cannot list", &full)? {
            let entry = entry.ctx("cannot list", &full)?;
            collect_files(root, &rel.join(entry.file_name()), out)?;
        }
    } else {
        out.push(rel.to_path_buf());
    }
    Ok(())
}
