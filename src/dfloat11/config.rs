//! `dfloat11_config` (which modules were compressed, and the names of their
//! weights) and weight shapes, which DFloat11 does not store.

use super::regex::Regex;
use serde_json::Value;
use std::collections::BTreeMap;

/// The parts of `dfloat11_config` a reader needs.
#[derive(Debug)]
pub struct Dfloat11Config {
    patterns: Vec<(String, Regex, Vec<String>)>,
}

impl Dfloat11Config {
    /// Reads `config.json`'s content; `Ok(None)` if it has no `dfloat11_config`.
    pub fn from_config_json(config: &Value) -> Result<Option<Self>, String> {
        let Some(c) = config.get("dfloat11_config") else { return Ok(None) };
        // gaps and output_positions depend on the block size, and the kernel
        // hard-codes 8 bytes per thread: anything else is not decodable as DFloat11.
        let tpb = c.get("threads_per_block").map(|v| match v {
            Value::Array(a) if a.len() == 1 => a[0].as_u64(),
            v => v.as_u64(),
        });
        if let Some(t) = tpb
            && t != Some(512)
        {
            return Err(format!(
                "dfloat11_config.threads_per_block is {}, only 512 is supported",
                c["threads_per_block"]
            ));
        }
        if let Some(b) = c.get("bytes_per_thread")
            && b.as_u64() != Some(8)
        {
            return Err(format!("dfloat11_config.bytes_per_thread is {b}, only 8 is supported"));
        }
        let dict =
            c.get("pattern_dict").and_then(Value::as_object).ok_or("dfloat11_config has no pattern_dict object")?;
        let mut patterns = Vec::new();
        for (pat, children) in dict {
            let re = Regex::new(pat).map_err(|e| format!("pattern_dict key {pat:?}: {e}"))?;
            let children = children
                .as_array()
                .ok_or_else(|| format!("pattern_dict[{pat:?}] is not a list"))?
                .iter()
                .map(|c| {
                    c.as_str().map(str::to_string).ok_or_else(|| format!("pattern_dict[{pat:?}] holds a non-string"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            patterns.push((pat.clone(), re, children));
        }
        Ok(Some(Dfloat11Config { patterns }))
    }

    /// The weight names of `module`, in concatenation order, given how many
    /// pieces its `split_positions` produced.
    pub fn weight_names(&self, module: &str, pieces: usize) -> Result<Vec<String>, String> {
        let mut found: Option<&Vec<String>> = None;
        for (pat, re, children) in &self.patterns {
            if re.full_match(module) {
                if found.is_some_and(|f| f != children) {
                    return Err(format!(
                        "module {module} matches several pattern_dict keys with different children ({pat:?} among them)"
                    ));
                }
                found = Some(children);
            }
        }
        let names: Vec<String> = match found {
            None if pieces == 1 => vec![format!("{module}.weight")],
            None => {
                return Err(format!(
                    "module {module} matches no pattern_dict key, so its {pieces} weights cannot be named"
                ));
            }
            // A matched Linear or Embedding stores its own weight; its list is ignored.
            Some(children) if pieces == 1 && children.len() <= 1 => match children.first() {
                Some(c) => vec![format!("{module}.{c}.weight")],
                None => vec![format!("{module}.weight")],
            },
            Some(children) => children.iter().map(|c| format!("{module}.{c}.weight")).collect(),
        };
        if names.len() != pieces {
            return Err(format!(
                "module {module}: split_positions gives {pieces} weights but pattern_dict lists {}",
                names.len()
            ));
        }
        Ok(names)
    }
}

/// Where weight shapes come from: an explicit `--shapes` map first, then the
/// model config for the architectures whose layout is known.
#[derive(Debug, Default)]
pub struct Shapes {
    explicit: BTreeMap<String, Vec<u64>>,
    llama: Option<LlamaDims>,
}

#[derive(Debug)]
struct LlamaDims {
    hidden: u64,
    intermediate: u64,
    q_out: u64,
    kv_out: u64,
    vocab: u64,
}

impl Shapes {
    /// Builds the shape sources from `--shapes` content (name → shape) and config.json.
    pub fn new(explicit: Option<&Value>, config: &Value) -> Result<Self, String> {
        let explicit = match explicit {
            None => BTreeMap::new(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| format!("shapes file must map tensor names to lists of integers: {e}"))?,
        };
        Ok(Shapes { explicit, llama: LlamaDims::from_config(config) })
    }

    /// The shape of weight `name` with `numel` elements: `Ok(None)` when no
    /// source knows it, `Err` when a source disagrees with the element count.
    pub fn shape(&self, name: &str, numel: u64) -> Result<Option<Vec<u64>>, String> {
        let (shape, source) = if let Some(s) = self.explicit.get(name) {
            (s.clone(), "the shapes file")
        } else if let Some(s) = self.llama.as_ref().and_then(|l| l.shape(name)) {
            (s, "config.json")
        } else {
            return Ok(None);
        };
        if shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)) != Some(numel) {
            return Err(format!("{name}: shape {shape:?} from {source} does not hold its {numel} elements"));
        }
        Ok(Some(shape))
    }
}

impl LlamaDims {
    fn from_config(c: &Value) -> Option<Self> {
        let model_type = c.get("model_type")?.as_str()?;
        if !matches!(model_type, "llama" | "mistral" | "qwen2" | "qwen3") {
            return None;
        }
        let get = |k: &str| c.get(k).and_then(Value::as_u64);
        let hidden = get("hidden_size")?;
        let heads = get("num_attention_heads")?;
        let kv_heads = get("num_key_value_heads").unwrap_or(heads);
        let head_dim = get("head_dim").unwrap_or(hidden / heads.max(1));
        Some(LlamaDims {
            hidden,
            intermediate: get("intermediate_size")?,
            q_out: heads * head_dim,
            kv_out: kv_heads * head_dim,
            vocab: get("vocab_size")?,
        })
    }

    fn shape(&self, name: &str) -> Option<Vec<u64>> {
        let stem = name.strip_suffix(".weight")?;
        let last = stem.rsplit('.').next()?;
        let (h, i) = (self.hidden, self.intermediate);
        Some(match last {
            "q_proj" => vec![self.q_out, h],
            "k_proj" | "v_proj" => vec![self.kv_out, h],
            "o_proj" => vec![h, self.q_out],
            "gate_proj" | "up_proj" => vec![i, h],
            "down_proj" => vec![h, i],
            "embed_tokens" | "lm_head" => vec![self.vocab, h],
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_pattern_dict() {
        let c = json!({"dfloat11_config": {"threads_per_block": [512], "bytes_per_thread": 8, "pattern_dict": {
            "model\\.layers\\.\\d+\\.mlp": ["gate_proj", "up_proj", "down_proj"],
            "model\\.layers\\.\\d+\\.self_attn\\.o_proj": [],
            "lm_head": []}}});
        let d = Dfloat11Config::from_config_json(&c).unwrap().unwrap();
        assert_eq!(
            d.weight_names("model.layers.3.mlp", 3).unwrap(),
            [
                "model.layers.3.mlp.gate_proj.weight",
                "model.layers.3.mlp.up_proj.weight",
                "model.layers.3.mlp.down_proj.weight"
            ]
        );
        assert_eq!(d.weight_names("lm_head", 1).unwrap(), ["lm_head.weight"]);
        assert_eq!(
            d.weight_names("model.layers.0.self_attn.o_proj", 1).unwrap(),
            ["model.layers.0.self_attn.o_proj.weight"]
        );
        assert!(d.weight_names("model.layers.3.mlp", 2).is_err());
        assert!(
            Dfloat11Config::from_config_json(
                &json!({"dfloat11_config": {"threads_per_block": [256], "pattern_dict": {}}})
            )
            .is_err()
        );
        assert!(Dfloat11Config::from_config_json(&json!({"model_type": "llama"})).unwrap().is_none());
    }

    #[test]
    fn llama_shapes() {
        let c = json!({"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 100});
        let s = Shapes::new(Some(&json!({"x.weight": [2, 3]})), &c).unwrap();
        assert_eq!(s.shape("model.layers.0.self_attn.q_proj.weight", 128 * 64).unwrap(), Some(vec![128, 64]));
        assert_eq!(s.shape("model.layers.0.self_attn.k_proj.weight", 64 * 64).unwrap(), Some(vec![64, 64]));
        assert_eq!(s.shape("model.layers.0.mlp.down_proj.weight", 64 * 96).unwrap(), Some(vec![64, 96]));
        assert_eq!(s.shape("x.weight", 6).unwrap(), Some(vec![2, 3]));
        assert!(s.shape("lm_head.weight", 5).is_err());
        assert_eq!(s.shape("model.norm.weight", 64).unwrap(), None);
    }
}
