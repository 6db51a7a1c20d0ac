//! Opening a checkpoint: finding its files, reading df11's metadata or
//! DFloat11's config, and cutting each file into [`Unit`]s, the pieces that
//! decode independently (one stored tensor, or one DFloat11 module).

use super::error::{Error, IoContext, Result, at, tensor_err};
use super::files::Input;
use super::safetensors::{Metadata, SafetensorsFile, TensorInfo};
use super::{CHECKPOINT_VERSION, Checkpoint, Df11Meta, Kind, META_KEY, Payload, Shard, TensorMeta, Unit};
use crate::dfloat11::ARRAY_NAMES;
use crate::dfloat11::config::{Dfloat11Config, Shapes};
use serde_json::Value;
use std::path::Path;

/// How to open a checkpoint.
#[derive(Default)]
pub struct OpenOptions<'a> {
    /// For DFloat11 checkpoints: a JSON file mapping weight names to shapes
    /// (DFloat11 stores none; without it they come from config.json for the
    /// architectures whose layout is known, else weights are vectors).
    pub shapes_file: Option<&'a Path>,
    /// Receives warnings (a DFloat11 weight whose shape is unknown); they are
    /// dropped if `None`.
    pub warn: Option<&'a dyn Fn(&str)>,
}

impl Checkpoint {
    /// Opens the checkpoint at `path` (a `.safetensors` file or a directory)
    /// with default [`OpenOptions`].
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        Self::open_with(path.as_ref(), &OpenOptions::default())
    }

    /// Opens the checkpoint at `path`: validates every file's header (see
    /// [`super::safetensors`]) and df11 metadata, and for DFloat11 resolves
    /// weight names and shapes. No tensor data is read beyond DFloat11's
    /// `split_positions`.
    pub fn open_with(path: &Path, opts: &OpenOptions<'_>) -> Result<Checkpoint> {
        let warn = |m: &str| {
            if let Some(w) = opts.warn {
                w(m)
            }
        };
        let shapes_file = opts.shapes_file;
        let input = Input::open(path)?;
        let config = match &input {
            Input::Dir(d) => {
                let p = d.root.join("config.json");
                match std::fs::read(&p) {
                    Ok(b) => {
                        Some(serde_json::from_slice::<Value>(&b).map_err(|e| at(&p, format!("not valid JSON: {e}")))?)
                    }
                    Err(_) => None,
                }
            }
            Input::File(_) => None,
        };
        let cfg_path = path.join("config.json");
        let dfloat11 = match &config {
            Some(c) => Dfloat11Config::from_config_json(c).map_err(|e| at(&cfg_path, e))?,
            None => None,
        };
        let mut shards = Vec::new();
        let mut kind = Kind::Plain;
        if let (Some(d), Some(config)) = (&dfloat11, &config) {
            let shapes_json = match shapes_file {
                Some(p) => Some(
                    serde_json::from_slice::<Value>(&std::fs::read(p).ctx("cannot read", p)?)
                        .map_err(|e| at(p, format!("not valid JSON: {e}")))?,
                ),
                None => None,
            };
            let shapes =
                Shapes::new(shapes_json.as_ref(), config).map_err(|e| at(shapes_file.unwrap_or(&cfg_path), e))?;
            kind = Kind::Dfloat11;
            for (p, rel) in input.files() {
                let file = SafetensorsFile::open(&p)?;
                let units = dfloat11_units(&file, d, &shapes, &warn)?;
                let user_metadata = file.metadata.clone();
                shards.push(Shard { file, rel, units, user_metadata, header_len: None });
            }
        } else {
            if shapes_file.is_some() {
                return Err(at(
                    path,
                    "--shapes only applies to DFloat11 checkpoints (config.json with dfloat11_config)",
                ));
            }
            for (p, rel) in input.files() {
                let file = SafetensorsFile::open(&p)?;
                let (units, user_metadata, df11_header_len) = df11_units(&file)?;
                let header_len = match df11_header_len {
                    Some(stored) => {
                        kind = Kind::Df11;
                        stored
                    }
                    None => file.reproducible_header_len(),
                };
                shards.push(Shard { file, rel, units, user_metadata, header_len });
            }
        }
        Ok(Checkpoint::new(path, kind, input, shards, config))
    }
}

/// A file's units, its metadata without df11's key, and for a df11 file
/// (`Some`) its stored original header length.
type Df11Units = (Vec<Unit>, Option<Metadata>, Option<Option<u64>>);

fn df11_units(file: &SafetensorsFile) -> Result<Df11Units> {
    let path = file.path.as_path();
    let mut user = file.metadata.clone();
    let meta: Option<Df11Meta> = match user.as_mut().and_then(|m| m.remove(META_KEY)) {
        Some(s) => Some(
            serde_json::from_str(&s)
                .map_err(|e| at(path, format!("__metadata__.{META_KEY} is not valid df11 metadata: {e}")))?,
        ),
        None => None,
    };
    if let Some(m) = &meta
        && m.format_version != CHECKPOINT_VERSION
    {
        return Err(at(
            path,
            format!(
                "df11 checkpoint format version {} is not supported (this df11 reads {CHECKPOINT_VERSION})",
                m.format_version
            ),
        ));
    }
    let compressed = meta.as_ref().map(|m| &m.tensors);
    if let Some(m) = &meta {
        check_raw_entries(file, m)?;
    }
    let mut units = Vec::new();
    for t in &file.tensors {
        match compressed.and_then(|c| c.get(&t.name)) {
            Some(orig) => {
                if t.dtype != "U8" || t.shape.len() != 1 {
                    return Err(tensor_err(
                        path,
                        &t.name,
                        format!("df11 metadata says compressed, but it is {} {:?}, not a U8 vector", t.dtype, t.shape),
                    ));
                }
                if orig.dtype != "BF16" {
                    return Err(tensor_err(
                        path,
                        &t.name,
                        format!("df11 version 1 only compresses BF16, metadata says {}", orig.dtype),
                    ));
                }
                // The shape comes from metadata and sizes the decode buffer:
                // bound it before anything is allocated for it, by what the
                // container's length can hold.
                let numel = orig.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
                if numel.is_none_or(|n| n > df11_host::container::max_elements_in(t.len())) {
                    return Err(tensor_err(
                        path,
                        &t.name,
                        format!(
                            "df11 metadata shape {:?} has more elements than its {}-byte container can hold",
                            orig.shape,
                            t.len()
                        ),
                    ));
                }
                let out = TensorMeta { name: t.name.clone(), dtype: orig.dtype.clone(), shape: orig.shape.clone() };
                units.push(Unit { outputs: vec![out], payload: Payload::Df11(t.clone()) });
            }
            None => {
                let out = TensorMeta { name: t.name.clone(), dtype: t.dtype.clone(), shape: t.shape.clone() };
                units.push(Unit { outputs: vec![out], payload: Payload::Raw(t.clone()) });
            }
        }
    }
    if let Some(c) = compressed {
        for name in c.keys() {
            if file.get(name).is_none() {
                return Err(tensor_err(
                    path,
                    name,
                    "df11 metadata lists it as compressed, but the file does not hold it",
                ));
            }
        }
    }
    if let Some(u) = &user
        && u.is_empty()
    {
        user = None;
    }
    Ok((units, user, meta.map(|m| m.header_len)))
}

/// The raw fallbacks of df11 metadata (FORMAT.md section 11.1) must be
/// stored exactly as listed: BF16, the recorded shape, and not also listed as
/// compressed.
fn check_raw_entries(file: &SafetensorsFile, meta: &Df11Meta) -> Result<()> {
    let path = file.path.as_path();
    for (name, orig) in &meta.raw {
        let err = |msg: String| Err(tensor_err(path, name, msg));
        if meta.tensors.contains_key(name) {
            return err("df11 metadata lists it both as compressed and as raw".into());
        }
        if orig.dtype != "BF16" {
            return err(format!(
                "df11 version 1 only stores BF16 tensors raw in place of compressing them, metadata says {}",
                orig.dtype
            ));
        }
        let Some(t) = file.get(name) else {
            return err("df11 metadata lists it as stored raw, but the file does not hold it".into());
        };
        if t.dtype != orig.dtype || t.shape != orig.shape {
            return err(format!(
                "df11 metadata says stored raw as {} {:?}, but it is {} {:?}",
                orig.dtype, orig.shape, t.dtype, t.shape
            ));
        }
    }
    Ok(())
}

fn dfloat11_units(
    file: &SafetensorsFile,
    cfg: &Dfloat11Config,
    shapes: &Shapes,
    warn: &dyn Fn(&str),
) -> Result<Vec<Unit>> {
    let path = file.path.as_path();
    let mod_err =
        |module: &str, msg: String| Error::Module { path: path.to_path_buf(), module: module.to_string(), msg };
    let mut units = Vec::new();
    let modules: std::collections::HashSet<&str> =
        file.tensors.iter().filter_map(|t| t.name.strip_suffix(".luts")).collect();
    let in_module = |name: &str| {
        ARRAY_NAMES
            .iter()
            .any(|a| name.strip_suffix(a).and_then(|m| m.strip_suffix('.')).is_some_and(|m| modules.contains(m)))
    };
    for t in &file.tensors {
        let Some(module) = t.name.strip_suffix(".luts") else {
            if in_module(&t.name) {
                // Part of a module; handled with its `.luts`.
                continue;
            }
            let out = TensorMeta { name: t.name.clone(), dtype: t.dtype.clone(), shape: t.shape.clone() };
            units.push(Unit { outputs: vec![out], payload: Payload::Raw(t.clone()) });
            continue;
        };
        let arrays: Vec<TensorInfo> = ARRAY_NAMES
            .iter()
            .map(|a| {
                let name = format!("{module}.{a}");
                file.get(&name).cloned().ok_or_else(|| mod_err(module, format!("has no {name}")))
            })
            .collect::<Result<_>>()?;
        for (a, want) in arrays.iter().zip(["U8", "U8", "U8", "U8", "U8", "I64"]) {
            if a.dtype != want {
                return Err(tensor_err(path, &a.name, format!("expected dtype {want}, found {}", a.dtype)));
            }
        }
        let n = arrays[2].len();
        let split = file.bytes(&arrays[5]);
        let mut bounds = vec![0u64];
        for c in split.chunks_exact(8) {
            let v = i64::from_le_bytes(c.try_into().expect("chunks of 8"));
            let prev = bounds.last().copied().unwrap_or(0);
            // Negative entries fail `try_from`.
            match u64::try_from(v) {
                Ok(v) if v >= prev && v <= n => bounds.push(v),
                _ => {
                    return Err(mod_err(
                        module,
                        format!("split_positions entry {v} is out of order or beyond {n} elements"),
                    ));
                }
            }
        }
        bounds.push(n);
        let names = cfg.weight_names(module, bounds.len() - 1).map_err(|e| at(path, e))?;
        let mut outputs = Vec::new();
        for (name, w) in names.into_iter().zip(bounds.windows(2)) {
            let numel = w[1] - w[0];
            let shape = match shapes.shape(&name, numel).map_err(|e| at(path, e))? {
                Some(s) => s,
                None => {
                    warn(&format!(
                        "warning: {}: no shape known for {name}; writing it as a vector of {numel} (pass --shapes)",
                        path.display()
                    ));
                    vec![numel]
                }
            };
            outputs.push(TensorMeta { name, dtype: "BF16".into(), shape });
        }
        let arrays: [TensorInfo; 6] = arrays.try_into().map_err(|_| mod_err(module, "not six arrays".into()))?;
        units.push(Unit { outputs, payload: Payload::Dfloat11(Box::new(arrays)) });
    }
    Ok(units)
}
