//! Atomic creation of outputs: a file or directory is built under a hidden
//! temporary name next to its final place, fsynced, and renamed into place.

use super::error::{Error, IoContext, Result, at};
use std::fs;
use std::path::{Path, PathBuf};

/// Copies `rel` files from `from` into `to`, creating subdirectories, and
/// fsyncs the copies (the directory rename that publishes them must not
/// outlive their data in a crash).
pub fn copy_others(from: &Path, to: &Path, rel: &[PathBuf]) -> Result<()> {
    for r in rel {
        let dst = to.join(r);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).ctx("cannot create", parent)?;
        }
        fs::copy(from.join(r), &dst).ctx("cannot copy to", &dst)?;
        fs::File::open(&dst).and_then(|f| f.sync_all()).ctx("cannot sync", &dst)?;
    }
    Ok(())
}

/// Writes `v` as pretty JSON with a final newline (the way Hugging Face
/// writes config and index files) and fsyncs it.
pub fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    use std::io::Write;
    let mut s = serde_json::to_string_pretty(v).expect("JSON value serializes");
    s.push('\n');
    let mut f = fs::File::create(path).ctx("cannot create", path)?;
    f.write_all(s.as_bytes()).ctx("cannot write", path)?;
    f.sync_all().ctx("cannot sync", path)
}

/// Checks that `output` may be written: it is none of the inputs, does not
/// contain them, and exists only with `force`.
pub fn check_output(output: &Path, inputs: &[&Path], force: bool) -> Result<()> {
    let out_abs = absolute(output)?;
    for input in inputs {
        let in_abs = fs::canonicalize(input).ctx("cannot read", input)?;
        if out_abs == in_abs {
            return Err(at(output, "refusing to overwrite the input"));
        }
        if in_abs.starts_with(&out_abs) {
            return Err(at(
                output,
                format!("refusing to replace a directory that contains the input {}", input.display()),
            ));
        }
        if in_abs.is_dir() && out_abs.starts_with(&in_abs) {
            return Err(at(output, format!("the output must not be inside the input directory {}", input.display())));
        }
    }
    if fs::symlink_metadata(output).is_ok() && !force {
        return Err(at(output, "already exists (use --force to replace it)"));
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
    let name = p.file_name().ok_or_else(|| at(p, "not a valid output name"))?;
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
    /// Creates the temporary next to `final_path`, with the permissions any
    /// new file gets (`0o666` less the umask, as the files of an output
    /// directory and `cp` get them), not a temporary's owner-only `0o600`:
    /// a checkpoint is meant to be read by others, such as the user a
    /// container or a server runs as.
    pub fn create(final_path: &Path) -> Result<Self> {
        let dir = parent_dir(final_path);
        let prefix = temp_prefix(final_path);
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(fs::Permissions::from_mode(0o666));
        }
        let tmp = builder.tempfile_in(&dir).ctx("cannot create a file in", &dir)?;
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
            return Err(at(&final_path, "is a directory; remove it first to write a file there"));
        }
        self.tmp.persist(&final_path).map_err(|e| Error::Io {
            what: "cannot rename into",
            path: final_path.clone(),
            source: e.error,
        })?;
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
