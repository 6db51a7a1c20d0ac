//! Writes a synthetic Llama-style BF16 checkpoint directory (sharded, with
//! `model.safetensors.index.json` and `config.json`) for measuring the CLI on
//! multi-GB inputs without downloading a model. The config is complete enough
//! for `df11 run` (tied embeddings: there is no `lm_head`).
//!
//! `cargo run --release --example make_checkpoint -- OUT_DIR [LAYERS] [HIDDEN] [SHARDS] [INTER] [VOCAB] [untied]`
//! (defaults: 10 layers, hidden 4096, 2 shards, MLP width 8/3 of hidden
//! rounded up to 256, vocabulary 16,384, tied: about 3.7 GB). `untied` adds
//! an `lm_head`. Llama-3.1-8B's shape: `OUT 32 4096 4 14336 128256 untied`.
//!
//! Tensors are generated and written one at a time, so memory stays at one tensor.

use df11::synth::realistic_weights;
use serde_json::json;
use std::io::Write;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first().map(std::path::PathBuf::from) else {
        eprintln!("usage: make_checkpoint OUT_DIR [LAYERS] [HIDDEN] [SHARDS] [INTER] [VOCAB] [untied]");
        std::process::exit(2);
    };
    let num = |i: usize, d: usize| args.get(i).map_or(d, |s| s.parse().expect("a number"));
    let (layers, hidden, shards) = (num(1, 10), num(2, 4096), num(3, 2).max(1));
    let inter = num(4, (hidden * 8 / 3).div_ceil(256) * 256);
    let vocab = num(5, 16_384);
    let untied = args.get(6).is_some_and(|a| a == "untied");

    // (name, shape, scale); scale 0 marks a norm weight (all ones, as initialised).
    let mut per_shard: Vec<Vec<(String, Vec<usize>, f32)>> = vec![Vec::new(); shards];
    per_shard[0].push(("model.embed_tokens.weight".into(), vec![vocab, hidden], 0.03));
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        let drift = 1.0 + 0.05 * l as f32;
        let s = &mut per_shard[l * shards / layers.max(1)];
        s.push((format!("{p}.input_layernorm.weight"), vec![hidden], 0.0));
        s.push((format!("{p}.self_attn.q_proj.weight"), vec![hidden, hidden], 0.020 * drift));
        s.push((format!("{p}.self_attn.k_proj.weight"), vec![hidden / 4, hidden], 0.025 * drift));
        s.push((format!("{p}.self_attn.v_proj.weight"), vec![hidden / 4, hidden], 0.010 * drift));
        s.push((format!("{p}.self_attn.o_proj.weight"), vec![hidden, hidden], 0.012 * drift));
        s.push((format!("{p}.post_attention_layernorm.weight"), vec![hidden], 0.0));
        s.push((format!("{p}.mlp.gate_proj.weight"), vec![inter, hidden], 0.018 * drift));
        s.push((format!("{p}.mlp.up_proj.weight"), vec![inter, hidden], 0.016 * drift));
        s.push((format!("{p}.mlp.down_proj.weight"), vec![hidden, inter], 0.011 * drift));
    }
    per_shard[shards - 1].push(("model.norm.weight".into(), vec![hidden], 0.0));
    if untied {
        per_shard[shards - 1].push(("lm_head.weight".into(), vec![vocab, hidden], 0.02));
    }

    std::fs::create_dir_all(&out)?;
    let mut weight_map = serde_json::Map::new();
    let mut total = 0usize;
    let mut seed = 1u64;
    for (i, tensors) in per_shard.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, shards);
        // The header as the safetensors library writes it: `__metadata__`
        // first, tensors in data order as dtype, shape, data_offsets, compact
        // JSON, spaces to a multiple of 8.
        let mut entries = vec![r#""__metadata__":{"format":"pt"}"#.to_string()];
        let mut off = 0usize;
        for (name, shape, _) in tensors {
            let bytes = 2 * shape.iter().product::<usize>();
            entries.push(format!(
                r#"{}:{{"dtype":"BF16","shape":{},"data_offsets":[{off},{}]}}"#,
                json!(name),
                json!(shape),
                off + bytes
            ));
            weight_map.insert(name.clone(), file.clone().into());
            off += bytes;
        }
        total += off;
        let mut h = format!("{{{}}}", entries.join(",")).into_bytes();
        h.resize(h.len().next_multiple_of(8), b' ');
        let mut w = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(out.join(&file))?);
        w.write_all(&(h.len() as u64).to_le_bytes())?;
        w.write_all(&h)?;
        for (name, shape, scale) in tensors {
            let bits = if *scale == 0.0 {
                vec![0x3F80u16; shape[0]]
            } else {
                realistic_weights(shape[0], shape[1], *scale, seed)
            };
            seed += 1;
            let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
            w.write_all(&bytes)?;
            eprintln!("{file}: {name} {shape:?}");
        }
        w.flush()?;
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    std::fs::write(out.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index)? + "\n")?;
    let config = json!({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": hidden / 128,
        "num_key_value_heads": hidden / 512, "vocab_size": vocab, "torch_dtype": "bfloat16",
        // What `df11 run` needs besides the shapes.
        "tie_word_embeddings": !untied, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 4096, "hidden_act": "silu"});
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config)? + "\n")?;
    eprintln!("wrote {} ({:.2} GB of tensor data)", out.display(), total as f64 / 1e9);
    Ok(())
}
