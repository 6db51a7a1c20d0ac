//! Reading safetensors files through a memory map, and writing them in one
//! sequential pass.
//!
//! Layout of a safetensors file: an 8-byte little-endian header length, a JSON
//! header (`name -> {dtype, shape, data_offsets}` plus an optional
//! `__metadata__` map of strings), then the data section. Offsets are relative
//! to the data section.
//!
//! This is df11's only safetensors parser, and a strict one: the tensors'
//! byte ranges must tile the data section exactly (no overlap, no gap, none
//! past the end), and each must be as long as its dtype and shape say. A
//! reader that accepted overlapping ranges would hand out two tensors sharing
//! bytes; one that accepted gaps would hide data a writer never meant to keep.
//! Every error names the file and, where it is one tensor's fault, the tensor.

use super::error::{Error, IoContext, Result};
use memmap2::Mmap;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The safetensors crate refuses headers above 100 MB; so do we, before parsing.
const MAX_HEADER: u64 = 100_000_000;

/// One tensor's entry in a safetensors header.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Safetensors dtype string, e.g. `BF16`.
    pub dtype: String,
    /// Shape (empty for a scalar).
    pub shape: Vec<u64>,
    /// Byte range inside the data section.
    pub start: u64,
    /// End of the byte range (exclusive).
    pub end: u64,
}

impl TensorInfo {
    /// Stored bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True for a tensor of no bytes.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Bytes per element of a safetensors dtype, where that is a whole number.
pub fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" | "C64" => 8,
        _ => return None,
    })
}

/// A safetensors `__metadata__` map.
pub type Metadata = BTreeMap<String, String>;

/// A memory-mapped safetensors file with its parsed header.
pub struct SafetensorsFile {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    /// Tensors sorted by their position in the data section.
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` map, if the file has one.
    pub metadata: Option<Metadata>,
}

impl SafetensorsFile {
    /// Maps `path` and validates its header: every tensor's bytes lie inside the
    /// file and match its dtype and shape, so later slicing cannot go out of bounds.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).ctx("cannot open", path)?;
        // SAFETY: the map is read-only and df11 never writes to its inputs; a
        // file truncated by another process while mapped would fault (SIGBUS),
        // which is the accepted risk of every mmap-based safetensors reader.
        let mmap = unsafe { Mmap::map(&file) }.ctx("cannot map", path)?;
        let (data_start, tensors, metadata) =
            parse(&mmap).map_err(|(tensor, msg)| Error::Safetensors { path: path.to_path_buf(), tensor, msg })?;
        Ok(SafetensorsFile { path: path.to_path_buf(), mmap, data_start, tensors, metadata })
    }

    /// The stored bytes of a tensor of this file.
    pub fn bytes(&self, t: &TensorInfo) -> &[u8] {
        &self.mmap[self.data_start + t.start as usize..self.data_start + t.end as usize]
    }

    /// Looks a tensor up by name.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// This file's header length, if the header [`StreamWriter`] writes for
    /// its tensors and metadata, padded with spaces to that length, is this
    /// file's header byte for byte. It is for files the safetensors library
    /// wrote (compact JSON, `__metadata__` first, tensors in data order,
    /// spaces to a multiple of 8), and for df11's own plain output.
    pub fn reproducible_header_len(&self) -> Option<u64> {
        let planned: Vec<Planned> =
            self.tensors.iter().map(|t| Planned { name: t.name.clone(), dtype: t.dtype.clone() }).collect();
        let done: Vec<Written> = self
            .tensors
            .iter()
            .map(|t| Written { dtype: t.dtype.clone(), shape: t.shape.clone(), start: t.start, end: t.end })
            .collect();
        let generated = header_json(&planned, &done, &self.metadata);
        let (head, pad) = self.mmap[8..self.data_start].split_at_checked(generated.len())?;
        (head == generated.as_bytes() && pad.iter().all(|&b| b == b' ')).then_some(self.data_start as u64 - 8)
    }

    /// Tells the kernel a tensor's pages are no longer needed, so that streaming
    /// through a large checkpoint does not keep all of it resident.
    pub fn release(&self, t: &TensorInfo) {
        let page = 4096;
        let start = (self.data_start + t.start as usize).div_ceil(page) * page;
        let end = (self.data_start + t.end as usize) / page * page;
        if end > start {
            // SAFETY: the map is a read-only file mapping that is never
            // written, so its pages are clean copies of the file: MADV_DONTNEED
            // only drops them, and any later access (through a slice still
            // held, too) reads the same bytes from the file again.
            let _ = unsafe { self.mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
        }
    }
}

/// A parse failure: the tensor at fault (if one is) and what is wrong.
type ParseError = (Option<String>, String);

/// Parses and validates a whole safetensors file held in memory: returns the
/// data section's start, the tensors in data order, and `__metadata__`.
pub fn parse(bytes: &[u8]) -> std::result::Result<(usize, Vec<TensorInfo>, Option<Metadata>), ParseError> {
    let whole = |msg: String| (None, msg);
    let Some(len_bytes) = bytes.first_chunk::<8>() else {
        return Err(whole(format!("only {} bytes long", bytes.len())));
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    if header_len > MAX_HEADER || header_len > bytes.len() as u64 - 8 {
        return Err(whole(format!("header length {header_len} does not fit in the file")));
    }
    let data_start = 8 + header_len as usize;
    let header: Map<String, Value> = serde_json::from_slice(&bytes[8..data_start])
        .map_err(|e| whole(format!("header is not a JSON object: {e}")))?;
    let data_len = (bytes.len() - data_start) as u64;
    let mut metadata = None;
    let mut tensors = Vec::with_capacity(header.len());
    for (name, value) in header {
        if name == "__metadata__" {
            let map: Metadata = serde_json::from_value(value)
                .map_err(|e| whole(format!("__metadata__ is not a map of strings: {e}")))?;
            metadata = Some(map);
            continue;
        }
        let bad = |msg: String| (Some(name.clone()), msg);
        let info = parse_entry(&name, &value).map_err(bad)?;
        if info.end > data_len {
            return Err(bad(format!("data ends at {} but the data section has {data_len} bytes", info.end)));
        }
        if let Some(size) = dtype_size(&info.dtype) {
            let want = info.shape.iter().try_fold(size, |a, &d| a.checked_mul(d));
            if want != Some(info.len()) {
                return Err(bad(format!(
                    "{} {:?} needs {} bytes, has {}",
                    info.dtype,
                    info.shape,
                    want.map_or("too many".into(), |w| w.to_string()),
                    info.len()
                )));
            }
        }
        tensors.push(info);
    }
    tensors.sort_by(|a, b| (a.start, a.end, &a.name).cmp(&(b.start, b.end, &b.name)));
    // The ranges must tile the data section: each starts where the one before ends.
    let mut at = 0u64;
    for t in &tensors {
        if t.start < at {
            return Err((
                Some(t.name.clone()),
                format!("data_offsets [{}, {}] overlap the tensor before", t.start, t.end),
            ));
        }
        if t.start > at {
            return Err((
                Some(t.name.clone()),
                format!("data_offsets [{}, {}] leave a gap after byte {at} of the data section", t.start, t.end),
            ));
        }
        at = t.end;
    }
    if at != data_len {
        return Err(whole(format!("the tensors end at byte {at} but the data section has {data_len} bytes")));
    }
    Ok((data_start, tensors, metadata))
}

fn parse_entry(name: &str, v: &Value) -> std::result::Result<TensorInfo, String> {
    let obj = v.as_object().ok_or("entry is not an object")?;
    let dtype = obj.get("dtype").and_then(Value::as_str).ok_or("missing dtype")?.to_string();
    let shape = obj
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("missing shape")?
        .iter()
        .map(|d| d.as_u64().ok_or("shape holds a non-integer"))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let offs = obj.get("data_offsets").and_then(Value::as_array).ok_or("missing data_offsets")?;
    let (start, end) = match offs.as_slice() {
        [a, b] => (a.as_u64().ok_or("bad data_offsets")?, b.as_u64().ok_or("bad data_offsets")?),
        _ => return Err("data_offsets must have two entries".into()),
    };
    if end < start {
        return Err(format!("data_offsets [{start}, {end}] are reversed"));
    }
    Ok(TensorInfo { name: name.to_string(), dtype, shape, start, end })
}

/// A tensor the writer will receive, declared before any data is written.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Tensor name.
    pub name: String,
    /// Dtype to record, unless the tensor is written with
    /// [`StreamWriter::write_as`]. The shape is given with the data, because a
    /// compressed tensor's length is only known once it is compressed.
    pub dtype: String,
}

/// Writes a safetensors file in one sequential pass without holding the data.
///
/// Design: the header must come first but records offsets that are only known
/// after compressing. So the writer reserves room for the largest header the
/// declared tensors could need (every offset and shape entry at 20 digits, the
/// most a `u64` takes), streams the data after it, and finally writes the real
/// header into the reserved room, padded with spaces, which the safetensors
/// format allows. Memory stays at one tensor in flight; the file is written once.
///
/// A tensor may be written as another dtype than planned, and the metadata
/// replaced before [`StreamWriter::finish`], as long as the header still fits
/// the room reserved for the planned one (df11 plans a BF16 tensor as BF16
/// and its metadata for the worst case, then records what it stored).
pub struct StreamWriter {
    path: PathBuf,
    out: BufWriter<File>,
    reserved: usize,
    planned: Vec<Planned>,
    /// Per tensor written: dtype, shape, data offsets.
    done: Vec<Written>,
    metadata: Option<Metadata>,
    written: u64,
    /// File offset up to which writeback has been started.
    kicked: u64,
    /// The tensor being appended to, if one is.
    open: Option<Written>,
    /// The header's length were every tensor written as planned in `room`,
    /// if the room gives every size.
    exact: Option<usize>,
}

struct Written {
    dtype: String,
    shape: Vec<u64>,
    start: u64,
    end: u64,
}

impl StreamWriter {
    /// Starts writing to `file` (already created, empty), for tensors `planned`
    /// in that order. `room` gives, for each, the dtype and shape of the
    /// longest header entry it may get (a dimension of `u64::MAX` stands for
    /// a size not known yet); its data offsets are reserved at their longest.
    pub fn new(
        path: &Path,
        file: File,
        planned: Vec<Planned>,
        room: &[(String, Vec<u64>)],
        metadata: Option<Metadata>,
    ) -> Result<Self> {
        if room.len() != planned.len() {
            return Err(super::error::at(path, "header room given for a different number of tensors"));
        }
        let worst: Vec<Written> = room
            .iter()
            .map(|(dtype, shape)| Written {
                dtype: dtype.clone(),
                shape: shape.clone(),
                start: u64::MAX,
                end: u64::MAX,
            })
            .collect();
        let reserved = header_json(&planned, &worst, &metadata).len().next_multiple_of(8);
        // The same with the offsets the sizes give, where the room has them all.
        let mut at = 0u64;
        let exact: Option<Vec<Written>> = room
            .iter()
            .map(|(dtype, shape)| {
                let n = shape.iter().try_fold(dtype_size(dtype)?, |a, &d| a.checked_mul(d))?;
                let w = Written { dtype: dtype.clone(), shape: shape.clone(), start: at, end: at.checked_add(n)? };
                at = w.end;
                Some(w)
            })
            .collect();
        let exact = exact.map(|e| header_json(&planned, &e, &metadata).len());
        let mut out = BufWriter::with_capacity(WRITE_CHUNK, file);
        out.seek(SeekFrom::Start(8 + reserved as u64)).ctx("cannot write", path)?;
        Ok(StreamWriter {
            path: path.to_path_buf(),
            out,
            reserved,
            planned,
            done: Vec::new(),
            metadata,
            written: 0,
            kicked: 0,
            open: None,
            exact,
        })
    }

    /// Pads the header to `len` bytes instead of the room [`StreamWriter::new`]
    /// reserved, so that a file written back from a df11 one is the original
    /// byte for byte ([`SafetensorsFile::reproducible_header_len`]). Taken
    /// only before the first tensor, where the room gave every tensor's size,
    /// and where `len` is at least the header those sizes give and at most
    /// the larger of the reserved room and that header plus 7 (so a damaged
    /// file's value cannot make the writer leave a hole of any size): returns
    /// whether it was. The tensors must then be written as the room planned
    /// them ([`StreamWriter::finish`] fails otherwise).
    pub fn pad_header_to(&mut self, len: u64) -> Result<bool> {
        let Some(exact) = self.exact.filter(|_| self.written == 0 && self.done.is_empty() && self.open.is_none())
        else {
            return Ok(false);
        };
        let Ok(len) = usize::try_from(len) else { return Ok(false) };
        if len < exact || len > self.reserved.max(exact + 7) {
            return Ok(false);
        }
        self.reserved = len;
        self.out.seek(SeekFrom::Start(8 + len as u64)).ctx("cannot write", &self.path)?;
        Ok(true)
    }

    /// Appends the next planned tensor's data, as its planned dtype.
    pub fn write(&mut self, shape: Vec<u64>, data: &[u8]) -> Result<()> {
        self.write_as(None, shape, data)
    }

    /// Appends the next planned tensor's data as `dtype` (`None`: the planned
    /// one). The header must still fit the room reserved when it was planned
    /// ([`StreamWriter::finish`] fails otherwise).
    pub fn write_as(&mut self, dtype: Option<&str>, shape: Vec<u64>, data: &[u8]) -> Result<()> {
        self.begin(dtype, shape, data.len() as u64)?;
        self.append(data)?;
        self.end()
    }

    /// Starts the next planned tensor, of `len` bytes as `dtype` (`None`:
    /// the planned one), whose data then comes in pieces through
    /// [`StreamWriter::append`] until [`StreamWriter::end`].
    pub fn begin(&mut self, dtype: Option<&str>, shape: Vec<u64>, len: u64) -> Result<()> {
        let i = self.done.len();
        let Some(p) = self.planned.get(i).filter(|_| self.open.is_none()) else {
            return Err(super::error::at(&self.path, "more tensors written than planned"));
        };
        let dtype = dtype.unwrap_or(&p.dtype).to_string();
        let len_usize = usize::try_from(len).map_err(|_| super::error::at(&self.path, "tensor too large"))?;
        check_size(&self.path, &p.name, &dtype, &shape, len_usize)?;
        self.open = Some(Written { dtype, shape, start: self.written, end: self.written + len });
        Ok(())
    }

    /// Appends a piece of the tensor begun with [`StreamWriter::begin`].
    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        let Some(open) = &self.open else {
            return Err(super::error::at(&self.path, "data written outside a tensor"));
        };
        if self.written + data.len() as u64 > open.end {
            return Err(super::error::at(&self.path, "more data written than the tensor holds"));
        }
        for chunk in data.chunks(WRITE_CHUNK) {
            self.out.write_all(chunk).ctx("cannot write", &self.path)?;
            // Bytes already handed to the kernel (not in the BufWriter).
            let handed = (8 + self.reserved as u64 + self.written + chunk.len() as u64)
                .saturating_sub(self.out.buffer().len() as u64);
            if handed - self.kicked >= WRITEBACK_STEP {
                start_writeback(self.out.get_ref(), self.kicked, handed - self.kicked);
                self.kicked = handed;
            }
            self.written += chunk.len() as u64;
        }
        Ok(())
    }

    /// Ends the tensor begun with [`StreamWriter::begin`], which must have
    /// had all its bytes.
    pub fn end(&mut self) -> Result<()> {
        match self.open.take() {
            Some(w) if w.end == self.written => {
                self.done.push(w);
                Ok(())
            }
            _ => Err(super::error::at(&self.path, "a tensor ended without all its data")),
        }
    }

    /// Replaces the metadata given to [`StreamWriter::new`] (which reserved
    /// the header's room, so the new one must not need more).
    pub fn set_metadata(&mut self, metadata: Option<Metadata>) {
        self.metadata = metadata;
    }

    /// Writes the header, flushes and fsyncs. Returns the data section size.
    pub fn finish(mut self) -> Result<u64> {
        if self.done.len() != self.planned.len() || self.open.is_some() {
            return Err(super::error::at(&self.path, "fewer tensors written than planned"));
        }
        let mut header = header_json(&self.planned, &self.done, &self.metadata);
        if header.len() > self.reserved {
            // A longer dtype, shape or metadata than the room was reserved for.
            return Err(super::error::at(&self.path, "the header is larger than the room reserved for it"));
        }
        header.extend(std::iter::repeat_n(' ', self.reserved - header.len()));
        let path = self.path.clone();
        self.out.seek(SeekFrom::Start(0)).ctx("cannot write", &path)?;
        self.out.write_all(&(self.reserved as u64).to_le_bytes()).ctx("cannot write", &path)?;
        self.out.write_all(header.as_bytes()).ctx("cannot write", &path)?;
        let file = self.out.into_inner().map_err(|e| Error::Io {
            what: "cannot write",
            path: path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().ctx("cannot sync", &path)?;
        Ok(self.written)
    }
}

/// The most one `write` call hands the kernel. Measured on Linux 6.18/ext4
/// (docs/PERFORMANCE.md, section 4): a whole tensor in one call (megabytes)
/// took 1–6× as long to land in the page cache as the same bytes in 256 KiB
/// calls, which ran at `cp`'s rate every time; 1–2 MiB calls were the slowest.
const WRITE_CHUNK: usize = 256 << 10;

/// How much written data may wait in the page cache before its writeback is
/// started, so the disk works while the next tensors are coded and the final
/// fsync has only the tail left (it took 0.25 s per 0.8 GB shard otherwise).
const WRITEBACK_STEP: u64 = 16 << 20;

/// Starts writing `len` bytes at `offset` of `file` to disk and returns
/// without waiting. Only a hint: durability still comes from the fsync in
/// [`StreamWriter::finish`], which also reports any I/O error.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: sync_file_range takes no pointers, only a descriptor, which
    // `file` keeps open for the whole call.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}

fn header_json(planned: &[Planned], done: &[Written], metadata: &Option<Metadata>) -> String {
    let mut s = String::from("{");
    if let Some(m) = metadata {
        s.push_str("\"__metadata__\":");
        s.push_str(&serde_json::to_string(m).expect("string map serializes"));
    }
    for (p, Written { dtype, shape, start, end }) in planned.iter().zip(done) {
        if s.len() > 1 {
            s.push(',');
        }
        let name = serde_json::to_string(&p.name).expect("string serializes");
        let dtype = serde_json::to_string(dtype).expect("string serializes");
        let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
        s.push_str(&format!(
            "{name}:{{\"dtype\":{dtype},\"shape\":[{}],\"data_offsets\":[{start},{end}]}}",
            dims.join(",")
        ));
    }
    s.push('}');
    s
}

/// Fails unless `dtype`/`shape` describe exactly `len` bytes (guards the writer
/// against a source or decoder giving the wrong amount).
pub fn check_size(path: &Path, name: &str, dtype: &str, shape: &[u64], len: usize) -> Result<()> {
    if let Some(size) = dtype_size(dtype) {
        let want = shape.iter().try_fold(size, |a, &d| a.checked_mul(d));
        if want != Some(len as u64) {
            return Err(super::error::tensor_err(
                path,
                name,
                format!("{dtype} {shape:?} needs {want:?} bytes but {len} were given"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(names: &[&str]) -> Vec<Planned> {
        names.iter().map(|n| Planned { name: n.to_string(), dtype: "U8".into() }).collect()
    }

    fn writer(dir: &Path, names: &[&str]) -> StreamWriter {
        let path = dir.join("w.safetensors");
        let room: Vec<(String, Vec<u64>)> = names.iter().map(|_| ("U8".into(), vec![u64::MAX])).collect();
        StreamWriter::new(&path, File::create(&path).unwrap(), planned(names), &room, None).unwrap()
    }

    /// A tensor appended in pieces (more than a write call's worth, cut
    /// unevenly) lands where one written whole would.
    #[test]
    fn pieces_write_the_same_file_as_whole_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<u8> = (0..3 * WRITE_CHUNK + 17).map(|i| (i * 7) as u8).collect();
        let b = vec![9u8; 5];
        let mut w = writer(dir.path(), &["a", "b"]);
        w.begin(None, vec![a.len() as u64], a.len() as u64).unwrap();
        for piece in [&a[..1], &a[1..WRITE_CHUNK + 3], &a[WRITE_CHUNK + 3..]] {
            w.append(piece).unwrap();
        }
        w.end().unwrap();
        w.write(vec![5], &b).unwrap();
        assert_eq!(w.finish().unwrap(), (a.len() + 5) as u64);
        let bytes = std::fs::read(dir.path().join("w.safetensors")).unwrap();
        let (start, tensors, _) = parse(&bytes).unwrap();
        let data = |t: &TensorInfo| &bytes[start + t.start as usize..start + t.end as usize];
        assert_eq!((tensors[0].name.as_str(), data(&tensors[0])), ("a", &a[..]));
        assert_eq!((tensors[1].name.as_str(), data(&tensors[1])), ("b", &b[..]));
    }

    #[test]
    fn pieces_must_add_up_to_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), &["a", "b"]);
        assert!(w.append(&[1]).is_err(), "data outside a tensor");
        w.begin(None, vec![4], 4).unwrap();
        assert!(w.begin(None, vec![4], 4).is_err(), "a second tensor while one is open");
        w.append(&[1, 2, 3]).unwrap();
        assert!(w.append(&[4, 5]).is_err(), "more than the tensor holds");
        assert!(w.end().is_err(), "ended a byte short");
        let mut w = writer(dir.path(), &["a"]);
        w.begin(None, vec![2], 2).unwrap();
        w.append(&[1]).unwrap();
        assert!(w.finish().is_err(), "finished with a tensor open");
    }
}
