//! Deterministic synthetic bf16 weights that look like a trained model's:
//! Gaussian or Laplace values with a per-tensor scale, per-row scale
//! variation, a few outlier columns and rare outlier elements.
//!
//! Every row has its own generator seeded from `(seed, row)`, so rows are
//! generated in parallel and the result does not depend on the thread count.

use rayon::prelude::*;

/// SplitMix64: tiny, fast, and good enough for test data.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in (0, 1]: never 0, so its logarithm is finite.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller; one of the pair is discarded for simplicity).
    pub fn gaussian(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Laplace with unit variance.
    pub fn laplace(&mut self) -> f64 {
        let u = self.uniform();
        let sign = if self.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
        -sign * u.ln() * std::f64::consts::FRAC_1_SQRT_2
    }
}

/// The SplitMix64 output function, also used to derive independent seeds.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Shape of the value distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dist {
    /// Normal.
    Gaussian,
    /// Laplace (heavier tails, sharper peak).
    Laplace,
}

/// Knobs of [`weights_with`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SynthParams {
    /// Standard deviation of a typical row.
    pub scale: f32,
    /// Value distribution.
    pub dist: Dist,
    /// Standard deviation of the natural log of the per-row scale factor.
    pub row_log_sigma: f32,
    /// Fraction of columns whose values are `outlier_gain` times larger.
    pub outlier_col_frac: f64,
    /// Probability of an element being `outlier_gain` times larger.
    pub outlier_elem_prob: f64,
    /// Magnitude factor of outliers.
    pub outlier_gain: f32,
    /// Seed.
    pub seed: u64,
}

impl SynthParams {
    /// The weights of the ratio examples: per-row scales varying by about
    /// ±25 %, 0.2 % of the columns 8× outliers and one element in 50,000 a
    /// 30× outlier.
    pub fn typical(scale: f32, dist: Dist, seed: u64) -> Self {
        SynthParams {
            scale,
            dist,
            row_log_sigma: 0.25,
            outlier_col_frac: 0.002,
            outlier_elem_prob: 0.00002,
            outlier_gain: 8.0,
            seed,
        }
    }
}

/// `rows × cols` weights (row-major bf16 bit patterns) with scale `scale`. The
/// seed also picks the distribution (Gaussian or Laplace) so that a set of
/// seeds covers both; per-row scales vary by about ±25 %, about 0.2 % of the
/// columns are 8× outliers and one element in 100,000 is a 30× outlier.
pub fn realistic_weights(rows: usize, cols: usize, scale: f32, seed: u64) -> Vec<u16> {
    let dist = if mix(seed ^ 0xD15) & 1 == 0 { Dist::Gaussian } else { Dist::Laplace };
    weights_with(
        rows,
        cols,
        &SynthParams {
            scale,
            dist,
            row_log_sigma: 0.25,
            outlier_col_frac: 0.002,
            outlier_elem_prob: 1e-5,
            outlier_gain: 8.0,
            seed,
        },
    )
}

/// `rows × cols` weights with explicit parameters.
pub fn weights_with(rows: usize, cols: usize, p: &SynthParams) -> Vec<u16> {
    let mut out = vec![0u16; rows * cols];
    if cols == 0 {
        return out;
    }
    // Outlier columns are the same for every row, as in real activations-facing weights.
    let mut col_gain = vec![1.0f32; cols];
    let mut rng = SplitMix64::new(mix(p.seed ^ 0xC01));
    for g in col_gain.iter_mut() {
        if rng.uniform() <= p.outlier_col_frac {
            *g = p.outlier_gain;
        }
    }
    out.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
        let mut rng = SplitMix64::new(mix(p.seed.wrapping_add(mix(r as u64 ^ 0x5EED))));
        let row_scale = p.scale * (p.row_log_sigma as f64 * rng.gaussian()).exp() as f32;
        for (o, &g) in row.iter_mut().zip(&col_gain) {
            let v = match p.dist {
                Dist::Gaussian => rng.gaussian(),
                Dist::Laplace => rng.laplace(),
            } as f32;
            let mut x = v * row_scale * g;
            if p.outlier_elem_prob > 0.0 && rng.uniform() <= p.outlier_elem_prob {
                x *= p.outlier_gain * 3.75;
            }
            *o = half::bf16::from_f32(x).to_bits();
        }
    });
    out
}

/// One tensor of a synthetic model.
#[derive(Clone, Debug)]
pub struct SynthTensor {
    /// A name in the style of a checkpoint.
    pub name: String,
    /// Rows (output features).
    pub rows: usize,
    /// Columns (input features).
    pub cols: usize,
    /// Row-major bf16 bit patterns.
    pub bits: Vec<u16>,
}

/// A Llama-like decoder model: per layer the attention projections (grouped
/// KV heads: k and v are a quarter of q) and the gated MLP, plus the token
/// embedding. With `hidden = 2048` the tensors have 1M to 34M elements; with
/// `hidden = 4096`, 4M to 67M. Scales differ per projection and drift with depth.
pub fn realistic_model(layers: usize, hidden: usize, seed: u64) -> Vec<SynthTensor> {
    // MLP width ≈ 8/3 · hidden, rounded up to a multiple of 256.
    let inter = (hidden * 8 / 3).div_ceil(256) * 256;
    let vocab = 16_384;
    let mut specs: Vec<(String, usize, usize, f32)> = vec![("model.embed_tokens.weight".into(), vocab, hidden, 0.03)];
    for l in 0..layers {
        let drift = 1.0 + 0.05 * l as f32;
        let p = format!("model.layers.{l}");
        specs.push((format!("{p}.self_attn.q_proj.weight"), hidden, hidden, 0.020 * drift));
        specs.push((format!("{p}.self_attn.k_proj.weight"), hidden / 4, hidden, 0.025 * drift));
        specs.push((format!("{p}.self_attn.v_proj.weight"), hidden / 4, hidden, 0.010 * drift));
        specs.push((format!("{p}.self_attn.o_proj.weight"), hidden, hidden, 0.012 * drift));
        specs.push((format!("{p}.mlp.gate_proj.weight"), inter, hidden, 0.018 * drift));
        specs.push((format!("{p}.mlp.up_proj.weight"), inter, hidden, 0.016 * drift));
        specs.push((format!("{p}.mlp.down_proj.weight"), hidden, inter, 0.011 * drift));
    }
    specs
        .into_iter()
        .enumerate()
        .map(|(i, (name, rows, cols, scale))| {
            let bits = realistic_weights(rows, cols, scale, mix(seed ^ (i as u64 + 1)));
            SynthTensor { name, rows, cols, bits }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_seed_dependent() {
        let a = realistic_weights(7, 300, 0.02, 1);
        assert_eq!(a, realistic_weights(7, 300, 0.02, 1));
        assert_ne!(a, realistic_weights(7, 300, 0.02, 2));
        assert_eq!(a.len(), 2100);
    }

    #[test]
    fn values_have_the_requested_scale() {
        let w = realistic_weights(64, 1024, 0.02, 3);
        let rms = (w.iter().map(|&b| (half::bf16::from_bits(b).to_f32() as f64).powi(2)).sum::<f64>() / w.len() as f64)
            .sqrt();
        assert!((0.015..0.04).contains(&rms), "rms {rms}");
    }

    #[test]
    fn model_shapes() {
        let m = realistic_model(2, 256, 9);
        assert_eq!(m.len(), 1 + 2 * 7);
        assert_eq!(m[0].name, "model.embed_tokens.weight");
        assert_eq!((m[0].rows, m[0].cols), (16_384, 256));
        let up = m.iter().find(|t| t.name == "model.layers.1.mlp.up_proj.weight").unwrap();
        assert_eq!((up.rows, up.cols), (768, 256));
        assert!(m.iter().all(|t| t.bits.len() == t.rows * t.cols));
    }
}
