//! Checkpoints on disk: a single `.safetensors` file or a directory (possibly
//! sharded with a `*.safetensors.index.json`), and atomic creation of outputs.

pub mod safetensors;

use crate::error::{IoContext, Result, bail, err};
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
            let ft = entry.file_type().ctx("cannot read", &entry.path())?;
            if ft.is_file() && name.ends_with(".safetensors") {
                shards.push(name);
            } else if ft.is_file() && name.ends_with(".safetensors.index.json") {
                if index.is_some() {
                    bail!(
                        "{}: more than one *.safetensors.index.json; df11 handles one checkpoint per directory",
                        path.display()
                    );
                }
                let p = entry.path();
                let v: Value = serde_json::from_slice(&fs::read(&p).ctx("cannot read", &p)?)
                    .map_err(|e| err!("{}: not valid JSON: {e}", p.display()))?;
                index = Some((name, v));
            } else {
                collect_files(path, Path::new(&name), &mut others)?;
            }
        }
        if let Some((name, v)) = &index {
            let map = v.get("weight_map").and_then(Value::as_object);
            let map = map.ok_or_else(|| err!("{}: no weight_map object", path.join(name).display()))?;
            for shard in map.values() {
                let shard = shard.as_str().ok_or_else(|| err!("{}: weight_map values must be file names", name))?;
                if !shards.iter().any(|s| s == shard) {
                    bail!("{}: lists shard {shard}, which is not in the directory", path.join(name).display());
                }
            }
        }
        shards.sort();
        others.sort();
        if shards.is_empty() {
            bail!("{}: no .safetensors files in this directory", path.display());
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

/// Copies `rel` files from `from` into `to`, creating subdirectories.
pub fn copy_others(from: &Path, to: &Path, rel: &[PathBuf]) -> Result<()> {
    for r in rel {
        let dst = to.join(r);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).ctx("cannot create", parent)?;
        }
        fs::copy(from.join(r), &dst).ctx("cannot copy to", &dst)?;
    }
    Ok(())
}

/// Checks that `output` may be written: it is none of the inputs, does not
/// contain them, and exists only with `force`.
pub fn check_output(output: &Path, inputs: &[&Path], force: bool) -> Result<()> {
    let out_abs = absolute(output)?;
    for input in inputs {
        let in_abs = fs::canonicalize(input).ctx("cannot read", input)?;
        if out_abs == in_abs {
            bail!("{}: refusing to overwrite the input", output.display());
        }
        if in_abs.starts_with(&out_abs) {
            bail!("{}: refusing to replace a directory that contains the input {}", output.display(), input.display());
        }
        if in_abs.is_dir() && out_abs.starts_with(&in_abs) {
            bail!("{}: the output must not be inside the input directory {}", output.display(), input.display());
        }
    }
    if fs::symlink_metadata(output).is_ok() && !force {
        bail!("{}: already exists (use --force to replace it)", output.display());
    }
    Ok(())
}

/// The absolute, symlink-resolved form of a path that may not exist yet.
fn absolute(p: &Path) -> Result<PathBuf> {
    if let Ok(c) = fs::canonicalize(p) {
        return Ok(c);
    }
    let parent = match p.parent() {
        Some(x) if !x.as_os_str().is_empty() => x,
        _ => Path::new("."),
    };
    let name = p.file_name().ok_or_else(|| err!("{}: not a valid output name", p.display()))?;
    Ok(fs::canonicalize(parent).ctx("cannot use output directory", parent)?.join(name))
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(x) if !x.as_os_str().is_empty() => x.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_prefix(final_path: &Path) -> String {
    format!(".{}.df11-tmp-", final_path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
}

/// An output file being written under a temporary name in the target
/// directory. Dropped without [`OutputFile::commit`], the temporary is removed;
/// if the process is killed, only the hidden temporary remains, never a file
/// under the final name.
pub struct OutputFile {
    tmp: tempfile::NamedTempFile,
    final_path: PathBuf,
}

impl OutputFile {
    /// Creates the temporary next to `final_path`.
    pub fn create(final_path: &Path) -> Result<Self> {
        let dir = parent_dir(final_path);
        let tmp = tempfile::Builder::new()
            .prefix(&temp_prefix(final_path))
            .tempfile_in(&dir)
            .ctx("cannot create a file in", &dir)?;
        Ok(OutputFile { tmp, final_path: final_path.to_path_buf() })
    }

    /// Path of the temporary (for messages).
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// A second handle to the temporary, for writing.
    pub fn file(&self) -> Result<fs::File> {
        self.tmp.as_file().try_clone().ctx("cannot write", self.tmp.path())
    }

    /// Renames the (already fsynced) temporary to the final name.
    pub fn commit(self) -> Result<()> {
        let final_path = self.final_path;
        if final_path.is_dir() {
            bail!("{}: is a directory; remove it first to write a file there", final_path.display());
        }
        self.tmp.persist(&final_path).map_err(|e| err!("cannot rename into {}: {}", final_path.display(), e.error))?;
        sync_dir(&parent_dir(&final_path));
        Ok(())
    }
}

/// An output directory built under a temporary name next to its final place
/// and renamed at the end, so a failed run leaves nothing under the final name.
pub struct OutputDir {
    tmp: tempfile::TempDir,
    final_path: PathBuf,
}

impl OutputDir {
    /// Creates the temporary directory next to `final_path`.
    pub fn create(final_path: &Path) -> Result<Self> {
        let dir = parent_dir(final_path);
        let tmp = tempfile::Builder::new()
            .prefix(&temp_prefix(final_path))
            .tempdir_in(&dir)
            .ctx("cannot create a directory in", &dir)?;
        Ok(OutputDir { tmp, final_path: final_path.to_path_buf() })
    }

    /// The temporary directory to fill.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Moves the finished directory into place, replacing an existing output
    /// (already allowed by `--force`) only after the new one is complete.
    pub fn commit(self) -> Result<()> {
        let final_path = self.final_path.clone();
        let parent = parent_dir(&final_path);
        let built = self.tmp.keep();
        sync_dir(&built);
        if fs::symlink_metadata(&final_path).is_ok() {
            let old = tempfile::Builder::new()
                .prefix(&temp_prefix(&final_path))
                .tempdir_in(&parent)
                .ctx("cannot create a directory in", &parent)?
                .keep();
            let old_copy = old.join("old");
            fs::rename(&final_path, &old_copy).ctx("cannot move aside", &final_path)?;
            fs::rename(&built, &final_path).ctx("cannot rename into", &final_path)?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&built, &final_path).ctx("cannot rename into", &final_path)?;
        }
        sync_dir(&parent);
        Ok(())
    }
}

/// Makes a rename durable. Best effort: not every filesystem lets a directory be fsynced.
fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}
