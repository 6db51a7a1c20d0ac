//! `df11 verify ORIGINAL COMPRESSED`: every tensor comes back bit-exact.

use super::{Common, human};
use crate::error::{Result, bail, err};
use df11::checkpoint::{BATCH_BYTES, BufferReuse, Checkpoint, Decoder, Input, batches, recycle};
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Runs the check; `Ok` only if both sides hold the same tensors, bit for bit.
pub fn run(original: &Path, compressed: &Path, shapes: Option<&Path>, dec: &dyn Decoder, common: Common) -> Result<()> {
    let start = Instant::now();
    let orig = super::open(original, None, common)?;
    let comp = super::open(compressed, shapes, common)?;
    // Where each original tensor lives: (file, item, output).
    let mut index = HashMap::new();
    for (fi, f) in orig.shards().iter().enumerate() {
        for (ii, item) in f.units.iter().enumerate() {
            for (oi, o) in item.outputs.iter().enumerate() {
                if index.insert(o.name.as_str(), (fi, ii, oi)).is_some() {
                    bail!("{}: tensor {} appears twice", original.display(), o.name);
                }
            }
        }
    }
    // df11 tensors are compared as they decode; the buffers of anything
    // else decoded (an original that is compressed too, DFloat11 modules)
    // are reused by the next ones: one batch in flight and one batch's worth kept.
    let _reuse = BufferReuse::new(2 * BATCH_BYTES);
    let total: u64 = comp.units().fold(0u64, |a, (_, i)| a.saturating_add(i.plain_bytes()));
    let bar = common.progress(total);
    let problems = Mutex::new(Vec::<String>::new());
    let seen = Mutex::new(BTreeSet::<String>::new());
    let threads = rayon::current_num_threads();
    for f in comp.shards() {
        for batch in batches(&f.units, threads, BATCH_BYTES, |i| i.plain_bytes()) {
            batch.par_iter().try_for_each(|item| -> Result<()> {
                // Each output's original, where it has one of the same dtype and shape.
                let mut origs = Vec::with_capacity(item.outputs.len());
                for o in &item.outputs {
                    origs.push(None);
                    if !seen.lock().unwrap().insert(o.name.clone()) {
                        problems.lock().unwrap().push(format!(
                            "tensor {} appears twice in {}",
                            o.name,
                            compressed.display()
                        ));
                        continue;
                    }
                    let Some(&(fi, ii, oi)) = index.get(o.name.as_str()) else {
                        problems.lock().unwrap().push(format!("tensor {} is not in {}", o.name, original.display()));
                        continue;
                    };
                    let (of, oitem) = (&orig.shards()[fi], &orig.shards()[fi].units[ii]);
                    let want = &oitem.outputs[oi];
                    if want.dtype != o.dtype || want.shape != o.shape {
                        problems.lock().unwrap().push(format!(
                            "tensor {}: {} {:?} in the original, {} {:?} after decoding",
                            o.name, want.dtype, want.shape, o.dtype, o.shape
                        ));
                        continue;
                    }
                    *origs.last_mut().unwrap() = Some((of, oitem, of.decode_unit(oitem, dec)?, oi));
                }
                let expected: Vec<Option<&[u8]>> =
                    origs.iter().map(|x| x.as_ref().map(|(_, _, bytes, oi)| &*bytes[*oi])).collect();
                // Decoded and compared as it goes: no decoded copy is held.
                let diffs = f.compare_unit(item, &expected, dec)?;
                for (o, d) in item.outputs.iter().zip(diffs) {
                    if let Some(pos) = d {
                        problems.lock().unwrap().push(format!("tensor {} differs (first at byte {pos})", o.name));
                    }
                }
                for (of, oitem, bytes, _) in origs.into_iter().flatten() {
                    recycle(bytes);
                    of.release(oitem);
                }
                bar.inc(item.plain_bytes());
                f.release(item);
                Ok(())
            })?;
        }
    }
    bar.finish_and_clear();
    let seen = seen.into_inner().unwrap();
    let mut problems = problems.into_inner().unwrap();
    problems.sort();
    let mut missing: Vec<&str> = index.keys().copied().filter(|n| !seen.contains(*n)).collect();
    missing.sort();
    problems.extend(missing.iter().map(|n| format!("tensor {n} is missing from {}", compressed.display())));
    let files = compare_other_files(&orig, &comp, &mut problems)?;
    if !problems.is_empty() {
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        let more = if problems.len() > 5 { format!(" (and {} more)", problems.len() - 5) } else { String::new() };
        bail!("verify failed: {}{more}", shown.join("; "));
    }
    if !common.quiet {
        let files = match files {
            0 => String::new(),
            1 => " and 1 other file".to_string(),
            n => format!(" and {n} other files"),
        };
        println!(
            "OK: {} tensors ({}){files} of {} are bit-exact in {} ({:.1} s)",
            seen.len(),
            human(total),
            original.display(),
            compressed.display(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Compares the other files of two checkpoint directories (config,
/// tokenizer, ...), which df11 copies as they were: each must be in both,
/// byte for byte, and is a problem otherwise. `config.json` is the
/// exception: converting to or from DFloat11 rewrites it with or without
/// its `dfloat11_config`, so it is compared as JSON without that key.
/// Returns how many files were compared.
fn compare_other_files(orig: &Checkpoint, comp: &Checkpoint, problems: &mut Vec<String>) -> Result<usize> {
    let (Input::Dir(a), Input::Dir(b)) = (orig.input(), comp.input()) else {
        return Ok(0);
    };
    let theirs: BTreeSet<&PathBuf> = b.others.iter().collect();
    let mut n = 0;
    for rel in &a.others {
        if !theirs.contains(rel) {
            problems.push(format!("file {} is missing from {}", rel.display(), comp.path().display()));
            continue;
        }
        let (pa, pb) = (a.root.join(rel), b.root.join(rel));
        if rel.as_os_str() == "config.json"
            && let (Some(x), Some(y)) = (model_config(&pa), model_config(&pb))
        {
            if x != y {
                problems.push(format!("file {} differs (as JSON, leaving out dfloat11_config)", rel.display()));
            }
        } else if let Some(pos) = first_difference(&pa, &pb)? {
            problems.push(format!("file {} differs (first at byte {pos})", rel.display()));
        }
        n += 1;
    }
    let ours: BTreeSet<&PathBuf> = a.others.iter().collect();
    for rel in theirs.into_iter().filter(|r| !ours.contains(r)) {
        problems.push(format!("file {} is not in {}", rel.display(), orig.path().display()));
    }
    Ok(n)
}

/// A `config.json` as JSON without DFloat11's key, if it parses.
fn model_config(p: &Path) -> Option<serde_json::Value> {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    v.as_object_mut()?.remove("dfloat11_config");
    Some(v)
}

/// The first byte at which two files differ (a shorter one ends there), if any.
fn first_difference(a: &Path, b: &Path) -> Result<Option<u64>> {
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| err!("cannot read {}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    loop {
        // Whole buffers where the files have them, so that both sides line up.
        let fill = |f: &mut std::fs::File, buf: &mut [u8], p: &Path| -> Result<usize> {
            let mut got = 0;
            while got < buf.len() {
                match f.read(&mut buf[got..]) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(err!("cannot read {}: {e}", p.display())),
                }
            }
            Ok(got)
        };
        let (na, nb) = (fill(&mut fa, &mut ba, a)?, fill(&mut fb, &mut bb, b)?);
        let common = na.min(nb);
        if let Some(i) = ba[..common].iter().zip(&bb[..common]).position(|(x, y)| x != y) {
            return Ok(Some(at + i as u64));
        }
        if na != nb {
            return Ok(Some(at + common as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        at += na as u64;
    }
}
