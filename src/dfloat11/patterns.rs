//! `pattern_dict`: which modules a DFloat11 checkpoint compresses, and which
//! weights each one concatenates.
//!
//! Each key is a Python regular expression full-matched against a dotted module
//! name; its value lists the module's Linear children in concatenation order,
//! or is empty when the module is itself a Linear or Embedding (FORMAT.md §1).
//! Built-in dicts follow DFloat11's published checkpoints for the Llama
//! family: one unit per attention block, one per MLP, the LM head and the
//! token embedding.

use serde_json::{Map, Value};
use std::path::Path;

/// Why a pattern dict could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// config.json names no architecture with a built-in dict.
    #[error(
        "no built-in DFloat11 pattern_dict for model_type {model_type:?} (known: llama, mistral, qwen2, qwen3); pass a pattern dict file"
    )]
    UnknownModel {
        /// The config's `model_type` (or `architectures`), as found.
        model_type: String,
    },
    /// The dict is not an object of string lists, or a key is not a valid regex.
    #[error("invalid pattern_dict: {0}")]
    Invalid(String),
    /// The dict file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// An ordered `pattern_dict` with its compiled (anchored) expressions.
#[derive(Clone, Debug)]
pub struct PatternDict {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    pattern: String,
    regex: regex::Regex,
    children: Vec<String>,
}

/// One module a pattern dict selects: its name and its weights in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleSpec {
    /// Dotted module name, e.g. `model.layers.0.mlp`.
    pub name: String,
    /// Tensor names of its weights, in concatenation order.
    pub weights: Vec<String>,
}

const LLAMA_FAMILY: [(&str, &str); 4] = [
    ("llama", "LlamaForCausalLM"),
    ("mistral", "MistralForCausalLM"),
    ("qwen2", "Qwen2ForCausalLM"),
    ("qwen3", "Qwen3ForCausalLM"),
];

impl PatternDict {
    /// Builds a dict from `(pattern, children)` pairs.
    pub fn new<P: Into<String>, C: Into<String>>(
        entries: impl IntoIterator<Item = (P, Vec<C>)>,
    ) -> Result<Self, PatternError> {
        let entries = entries
            .into_iter()
            .map(|(p, c)| {
                let pattern = p.into();
                // Python's re.fullmatch semantics.
                let regex = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                    // The regex crate draws a multi-line caret diagram; its last line says what is wrong.
                    let e = e.to_string();
                    let why = e.lines().last().unwrap_or_default().trim_start_matches("error: ");
                    PatternError::Invalid(format!("key {pattern:?}: {why}"))
                })?;
                Ok(Entry { pattern, regex, children: c.into_iter().map(Into::into).collect() })
            })
            .collect::<Result<_, PatternError>>()?;
        Ok(PatternDict { entries })
    }

    /// The built-in dict for a model's config.json (Llama, Mistral, Qwen2, Qwen3,
    /// recognised by `model_type` or `architectures`).
    ///
    /// The token embedding is left out when the config ties it to the LM head:
    /// DFloat11's loader removes a compressed module's weight, which would leave
    /// the tied head without its values.
    pub fn for_config(config: &Value) -> Result<Self, PatternError> {
        let model_type = config.get("model_type").and_then(Value::as_str);
        let archs: Vec<&str> = config
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let known = LLAMA_FAMILY.iter().any(|(t, a)| model_type == Some(*t) || archs.contains(a));
        if !known {
            let found = model_type.map_or_else(|| format!("{archs:?}"), str::to_string);
            return Err(PatternError::UnknownModel { model_type: found });
        }
        let tied = config.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false);
        let mut entries = vec![
            (r"model\.layers\.\d+\.self_attn", vec!["q_proj", "k_proj", "v_proj", "o_proj"]),
            (r"model\.layers\.\d+\.mlp", vec!["gate_proj", "up_proj", "down_proj"]),
            ("lm_head", vec![]),
        ];
        if !tied {
            entries.push((r"model\.embed_tokens", vec![]));
        }
        PatternDict::new(entries)
    }

    /// Reads a dict from JSON: `{"regex": ["child", ...], ...}`, or a whole
    /// config.json / `dfloat11_config` holding a `pattern_dict` key.
    pub fn from_json(v: &Value) -> Result<Self, PatternError> {
        let v = v.get("dfloat11_config").unwrap_or(v);
        let v = v.get("pattern_dict").unwrap_or(v);
        let map = v.as_object().ok_or_else(|| PatternError::Invalid("not a JSON object".into()))?;
        let entries = map
            .iter()
            .map(|(k, children)| {
                let list = children
                    .as_array()
                    .and_then(|a| a.iter().map(|c| c.as_str().map(str::to_string)).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| PatternError::Invalid(format!("value of {k:?} is not a list of strings")))?;
                Ok((k.clone(), list))
            })
            .collect::<Result<Vec<_>, PatternError>>()?;
        PatternDict::new(entries)
    }

    /// Reads a dict from a JSON file (see [`PatternDict::from_json`]).
    pub fn from_file(path: &Path) -> Result<Self, PatternError> {
        let bytes = std::fs::read(path).map_err(|source| PatternError::Io { path: path.to_path_buf(), source })?;
        // Every error names the file.
        let invalid = |msg: String| PatternError::Invalid(format!("{}: {msg}", path.display()));
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        PatternDict::from_json(&v).map_err(|e| match e {
            PatternError::Invalid(msg) => invalid(msg),
            e => e,
        })
    }

    /// The dict as DFloat11 writes it into `dfloat11_config.pattern_dict`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for e in &self.entries {
            m.insert(e.pattern.clone(), Value::from(e.children.clone()));
        }
        Value::Object(m)
    }

    /// The modules this dict selects among the tensor names of a checkpoint, in
    /// the order of their first weight in `names`. A module is a full match of
    /// a key whose weights (`M.weight` for an empty list, `M.<child>.weight`
    /// otherwise) are all present. Errors if a matching module misses one of its
    /// children or if two modules claim the same tensor.
    pub fn modules<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<Vec<ModuleSpec>, PatternError> {
        let names: Vec<&str> = names.into_iter().collect();
        let present: std::collections::HashSet<&str> = names.iter().copied().collect();
        let mut claimed: std::collections::HashMap<String, String> = Default::default();
        let mut found: Vec<(usize, ModuleSpec)> = Vec::new();
        for (pos, name) in names.iter().enumerate() {
            let Some(stem) = name.strip_suffix(".weight") else { continue };
            for e in &self.entries {
                // The module a weight would belong to under this entry.
                let module = match e.children.first() {
                    None => stem,
                    Some(first) => match stem.strip_suffix(first.as_str()).and_then(|m| m.strip_suffix('.')) {
                        Some(m) => m,
                        None => continue,
                    },
                };
                if !e.regex.is_match(module) {
                    continue;
                }
                let weights: Vec<String> = if e.children.is_empty() {
                    vec![name.to_string()]
                } else {
                    e.children.iter().map(|c| format!("{module}.{c}.weight")).collect()
                };
                if let Some(missing) = weights.iter().find(|w| !present.contains(w.as_str())) {
                    return Err(PatternError::Invalid(format!(
                        "module {module} matches {:?} but the checkpoint has no {missing}",
                        e.pattern
                    )));
                }
                if found.iter().any(|(_, m)| m.name == module) {
                    continue;
                }
                for w in &weights {
                    if let Some(other) = claimed.insert(w.clone(), module.to_string()) {
                        return Err(PatternError::Invalid(format!(
                            "tensor {w} belongs to both module {other} and module {module}"
                        )));
                    }
                }
                found.push((pos, ModuleSpec { name: module.to_string(), weights }));
            }
        }
        found.sort_by_key(|(pos, _)| *pos);
        Ok(found.into_iter().map(|(_, m)| m).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn llama_family_dicts() {
        for (t, _) in LLAMA_FAMILY {
            let d = PatternDict::for_config(&json!({"model_type": t})).unwrap();
            assert_eq!(
                d.to_json(),
                json!({
                    "model\\.layers\\.\\d+\\.self_attn": ["q_proj", "k_proj", "v_proj", "o_proj"],
                    "model\\.layers\\.\\d+\\.mlp": ["gate_proj", "up_proj", "down_proj"],
                    "lm_head": [],
                    "model\\.embed_tokens": []
                })
            );
        }
        let d = PatternDict::for_config(&json!({"architectures": ["Qwen3ForCausalLM"], "tie_word_embeddings": true}))
            .unwrap();
        assert!(d.to_json().get("model\\.embed_tokens").is_none());
        let e = PatternDict::for_config(&json!({"model_type": "gpt2"})).unwrap_err();
        assert!(e.to_string().contains("gpt2"), "{e}");
    }

    #[test]
    fn modules_use_full_matches() {
        let d = PatternDict::for_config(&json!({"model_type": "llama"})).unwrap();
        let mut names = vec!["model.embed_tokens.weight".to_string(), "model.norm.weight".into()];
        for l in [0, 1] {
            for p in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                names.push(format!("model.layers.{l}.self_attn.{p}.weight"));
            }
            for p in ["gate_proj", "up_proj", "down_proj"] {
                names.push(format!("model.layers.{l}.mlp.{p}.weight"));
            }
            names.push(format!("model.layers.{l}.input_layernorm.weight"));
        }
        // Not full matches: a prefix and a suffix of a key.
        names.push("xlm_head.weight".into());
        names.push("model.layers.0.mlp.extra.weight".into());
        names.push("lm_head.weight".into());
        let m = d.modules(names.iter().map(String::as_str)).unwrap();
        let got: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            got,
            [
                "model.embed_tokens",
                "model.layers.0.self_attn",
                "model.layers.0.mlp",
                "model.layers.1.self_attn",
                "model.layers.1.mlp",
                "lm_head"
            ]
        );
        assert_eq!(
            m[2].weights,
            [
                "model.layers.0.mlp.gate_proj.weight",
                "model.layers.0.mlp.up_proj.weight",
                "model.layers.0.mlp.down_proj.weight"
            ]
        );
        // A matching module without one of its children is an error naming it.
        names.retain(|n| n != "model.layers.1.mlp.up_proj.weight");
        let e = d.modules(names.iter().map(String::as_str)).unwrap_err();
        assert!(e.to_string().contains("model.layers.1.mlp.up_proj.weight"), "{e}");
    }

    #[test]
    fn user_dicts() {
        let v = json!({"dfloat11_config": {"pattern_dict": {"a\\.\\d+": ["x", "y"], "b": []}}});
        let d = PatternDict::from_json(&v).unwrap();
        assert_eq!(d.to_json(), v["dfloat11_config"]["pattern_dict"]);
        let m = d.modules(["a.1.x.weight", "a.1.y.weight", "b.weight", "a.x.weight"]).unwrap();
        assert_eq!(m.len(), 2);
        assert!(PatternDict::from_json(&json!({"(": []})).is_err());
        assert!(PatternDict::from_json(&json!({"a": "x"})).is_err());
        assert!(PatternDict::from_json(&json!([1])).is_err());
        // Two keys claiming the same weight.
        let d = PatternDict::from_json(&json!({"a\\.1": ["x"], "a\\.1\\.x": []})).unwrap();
        assert!(d.modules(["a.1.x.weight"]).is_err());
    }
}
