//! Atomic creation of outputs: a file or directory is built under a hidden
//! temporary name next to its final place, fsynced, and renamed into place.
//!
//! The temporaries being built are listed, so that a program stopped by a
//! signal can remove them ([`remove_unfinished`]) rather than leave a
//! checkpoint's worth of hidden bytes behind; the `df11` command does on
//! SIGINT, SIGTERM and SIGHUP.

use super::error::{Error, IoContext, Result, at};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The temporaries of outputs not yet committed or dropped.
static UNFINISHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn unfinished() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // The list holds plain paths: a panic elsewhere leaves it usable.
    UNFINISHED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes `p` off `list`; whether it was there.
fn unlist(list: &mut Vec<PathBuf>, p: &Path) -> bool {
    let at = list.iter().position(|q| q == p);
    at.map(|i| list.swap_remove(i)).is_some()
}

/// A temporary's place in the list, from its creation until it is renamed
/// into place ([`Listed::take`]) or dropped.
struct Listed(PathBuf);

impl Listed {
    fn new(p: &Path) -> Self {
        unfinished().push(p.to_path_buf());
        Listed(p.to_path_buf())
    }

    /// Takes the temporary off the list for its rename, which runs under
    /// the list's lock (`rename`), so that the list never names an output
    /// already in place nor misses one not yet there. An error, and no
    /// rename, if the temporary was removed (the program is stopping).
    fn take<T>(&self, final_path: &Path, rename: impl FnOnce() -> Result<T>) -> Result<T> {
        let mut list = unfinished();
        if !unlist(&mut list, &self.0) {
            return Err(at(final_path, "not written: the run was interrupted"));
        }
        rename()
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        unlist(&mut unfinished(), &self.0);
    }
}

/// Removes the temporaries of every output still being written, and
/// returns how many it removed. For a program about to exit on a signal:
/// the outputs stay unwritten (nothing is ever left under a final name), and
/// their hidden temporaries go too. Writes still in flight on other threads
/// may fail after this; nothing is renamed into place once it has run.
pub fn remove_unfinished() -> usize {
    let mut list = unfinished();
    let mut removed = 0;
    for p in list.drain(..) {
        // A directory may still be gaining files from other threads: try again.
        let gone = (0..3).any(|_| if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) }.is_ok());
        removed += usize::from(gone);
    }
    removed
}

/// Copies `rel` files from `from` into `to`, creating subdirectories, and
/// fsyncs the copies (the directory rename that publishes them must not
/// outlive their data in a crash). Returns the bytes copied and the largest
/// file with its size.
pub fn copy_others(from: &Path, to: &Path, rel: &[PathBuf]) -> Result<(u64, Option<(PathBuf, u64)>)> {
    let mut total = 0u64;
    let mut largest: Option<(PathBuf, u64)> = None;
    for r in rel {
        let dst = to.join(r);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).ctx("cannot create", parent)?;
        }
        let n = fs::copy(from.join(r), &dst).ctx("cannot copy to", &dst)?;
        fs::File::open(&dst).and_then(|f| f.sync_all()).ctx("cannot sync", &dst)?;
        total = total.saturating_add(n);
        if largest.as_ref().is_none_or(|(_, m)| n > *m) {
            largest = Some((r.clone(), n));
        }
    }
    Ok((total, largest))
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
    listed: Listed,
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
        let listed = Listed::new(tmp.path());
        Ok(OutputFile { tmp, final_path: final_path.to_path_buf(), listed })
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
        let tmp = self.tmp;
        self.listed.take(&final_path, || {
            tmp.persist(&final_path).map_err(|e| Error::Io {
                what: "cannot rename into",
                path: final_path.clone(),
                source: e.error,
            })
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
    listed: Listed,
}

impl OutputDir {
    /// Creates the temporary directory next to `final_path`.
    pub fn create(final_path: &Path) -> Result<Self> {
        let dir = parent_dir(final_path);
        let tmp = tempfile::Builder::new()
            .prefix(&temp_prefix(final_path))
            .tempdir_in(&dir)
            .ctx("cannot create a directory in", &dir)?;
        let listed = Listed::new(tmp.path());
        Ok(OutputDir { tmp, final_path: final_path.to_path_buf(), listed })
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
        sync_dir(self.tmp.path());
        let aside = if fs::symlink_metadata(&final_path).is_ok() {
            let aside = tempfile::Builder::new()
                .prefix(&temp_prefix(&final_path))
                .tempdir_in(&parent)
                .ctx("cannot create a directory in", &parent)?;
            // Listed before the old output moves in: if the run stops while
            // it is removed below, the rest goes with the other temporaries.
            let listed = Listed::new(aside.path());
            Some((aside, listed))
        } else {
            None
        };
        let tmp = self.tmp;
        self.listed.take(&final_path, || {
            let old = aside.as_ref().map(|(a, _)| a.path().join("old"));
            if let Some(old) = &old {
                fs::rename(&final_path, old).ctx("cannot move aside", &final_path)?;
            }
            fs::rename(tmp.path(), &final_path).ctx("cannot rename into", &final_path).inspect_err(|_| {
                // The old output goes back (the new one is dropped with `tmp`).
                if let Some(old) = &old {
                    let _ = fs::rename(old, &final_path);
                }
            })?;
            // In place now: not to be removed with the temporary.
            let _ = tmp.keep();
            Ok(())
        })?;
        sync_dir(&parent);
        // The replaced output, dropped with its temporary directory.
        drop(aside);
        Ok(())
    }
}

/// Makes a rename durable. Best effort: not every filesystem lets a directory be fsynced.
fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}
