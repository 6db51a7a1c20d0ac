//! The `df11` command-line tool.

mod cli;
mod error;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Lossless compression of BF16 model weights.
///
/// df11 entropy-codes the 8-bit exponent of every BF16 weight and keeps the
/// sign and mantissa as they are: checkpoints shrink to about 70% and decode
/// bit for bit. It reads and writes safetensors files and Hugging Face style
/// checkpoint directories (sharded ones too); BF16 tensors are compressed,
/// every other tensor and file is copied unchanged.
///
/// Typical use:
///
///   df11 compress model/ -o model-df11/
///
///   df11 verify model/ model-df11/
///
///   df11 decompress model-df11/ -o model-restored/
#[derive(Parser, Debug)]
#[command(name = "df11", version, about, long_about, max_term_width = 100)]
struct Cli {
    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    quiet: bool,

    /// Worker threads (default: all cores).
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,

    #[command(subcommand)]
    command: Command,
}

/// `--layout` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LayoutArg {
    /// Interleaved in a warp's read order: the first layout.
    Warp,
    /// Each lane's stream whole: 1.2-1.35x lanes9's CPU decode speed, 0.04-0.05 bits/weight larger.
    Lanes,
    /// Lanes coding 9-bit symbols (the exponent and the mantissa's top bit): the default, the smallest.
    Lanes9,
}

impl From<LayoutArg> for df11::Layout {
    fn from(l: LayoutArg) -> Self {
        match l {
            LayoutArg::Warp => df11::Layout::Warp,
            LayoutArg::Lanes => df11::Layout::Lanes,
            LayoutArg::Lanes9 => df11::Layout::Lanes9,
        }
    }
}

/// `compress --format` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum FormatArg {
    /// df11 containers in safetensors (the same file or directory form as IN).
    Df11,
    /// A DFloat11 checkpoint directory, as DFloat11's `DFloat11Model.from_pretrained` loads it.
    Dfloat11,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compress every BF16 tensor of a checkpoint.
    ///
    /// IN is a .safetensors file or a checkpoint directory; OUT is written in
    /// the same form. Each BF16 tensor is stored as a U8 tensor of the same name
    /// holding a df11 container, or as it is where the container would not be
    /// at least 16 bytes smaller (tiny biases and norms: inspect shows them as
    /// raw); other tensors, the file metadata and the other files of a
    /// directory (config, tokenizer, index) are kept. A DFloat11
    /// checkpoint can be compressed too (it is decoded first).
    ///
    /// With --format dfloat11, OUT is a DFloat11 checkpoint directory instead:
    /// the modules of the pattern dict (built in for Llama, Mistral and Qwen
    /// configs) stored as DFloat11's six arrays, config.json with
    /// dfloat11_config. IN is a plain or df11 checkpoint directory, or a single
    /// file with --pattern-dict.
    ///
    /// Example: df11 compress model.safetensors -o model.df11.safetensors
    ///
    /// Example: df11 compress model/ -o model-dfloat11/ --format dfloat11
    Compress {
        /// Input file or directory.
        input: PathBuf,
        /// Output file or directory (must not exist, unless --force).
        #[arg(short, long)]
        output: PathBuf,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = FormatArg::Df11)]
        format: FormatArg,
        /// With --format dfloat11: JSON file of DFloat11's pattern_dict (module
        /// regex -> weight names), or a config.json holding one.
        #[arg(long, value_name = "FILE")]
        pattern_dict: Option<PathBuf>,
        /// With --format dfloat11: store a module holding weights DFloat11
        /// cannot encode (|x| >= 2^113, inf, NaN) uncompressed instead of failing.
        #[arg(long)]
        keep_unencodable: bool,
        /// For DFloat11 input: JSON file mapping weight names to shapes.
        #[arg(long, value_name = "FILE")]
        shapes: Option<PathBuf>,
        /// Rows of 256 weights per segment (1..=65536). Smaller segments give
        /// a GPU more parallel work (256: 2.2-2.5x faster on an H100 for
        /// large tensors) for about 0.01 bits/weight more; any value decodes
        /// everywhere.
        #[arg(long, value_name = "R", default_value_t = df11::format::DEFAULT_SEGMENT_ROWS,
              value_parser = clap::value_parser!(u32).range(1..=df11::format::MAX_SEGMENT_ROWS as i64))]
        segment_rows: u32,
        /// How lane streams are stored: `lanes9` (the smallest; a CPU core
        /// decodes it at over 3 GB/s), `lanes` (the same streams of 8-bit
        /// exponents: 1.2-1.35x faster on a CPU, 0.04-0.05 bits/weight larger)
        /// or `warp` (the first layout, interleaved as a GPU warp reads them;
        /// every reader still reads it).
        #[arg(long, value_enum, default_value = df11::Layout::default().name())]
        layout: LayoutArg,
    },
    /// Write a plain safetensors checkpoint from a df11 or DFloat11 one.
    ///
    /// The tensors come back bit-identical, with their names, dtypes, shapes and
    /// metadata. DFloat11 checkpoints (a directory whose config.json has
    /// dfloat11_config) store no shapes: they are taken from --shapes, else from
    /// config.json for Llama, Mistral and Qwen models, else written as vectors
    /// with a warning.
    ///
    /// Example: df11 decompress model-df11/ -o model/
    Decompress {
        /// Input file or directory.
        input: PathBuf,
        /// Output file or directory (must not exist, unless --force).
        #[arg(short, long)]
        output: PathBuf,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
        /// Decode on the GPU.
        #[arg(long)]
        gpu: bool,
        /// For DFloat11 input: JSON file mapping weight names to shapes.
        #[arg(long, value_name = "FILE")]
        shapes: Option<PathBuf>,
    },
    /// Check that a compressed checkpoint decodes to the original, bit for bit.
    ///
    /// Exits 0 only if every tensor of ORIGINAL is in COMPRESSED with the same
    /// dtype, shape and bits, and COMPRESSED has no other tensors. Otherwise it
    /// names the tensors that differ and exits 1.
    ///
    /// Example: df11 verify model/ model-df11/
    Verify {
        /// The plain checkpoint.
        original: PathBuf,
        /// The df11 (or DFloat11) checkpoint.
        compressed: PathBuf,
        /// Decode on the GPU.
        #[arg(long)]
        gpu: bool,
        /// For DFloat11 input: JSON file mapping weight names to shapes.
        #[arg(long, value_name = "FILE")]
        shapes: Option<PathBuf>,
    },
    /// Measure the compression ratio and CPU encode/decode throughput.
    ///
    /// Compresses and decompresses the BF16 tensors of FILE (or, without FILE,
    /// 96 MiB of synthetic realistic weights) in memory, checks the round trip
    /// bit for bit, and reports bits/weight, the 8 + H bound, GB/s (decode
    /// with and without the output's CRC32C check), and memcpy and zstd level
    /// 3 on the same bytes for comparison. Measures the default layout
    /// (lanes9) unless --layout says otherwise.
    ///
    /// Example: df11 bench model.safetensors --threads 8
    Bench {
        /// A BF16 safetensors file (default: synthetic weights).
        file: Option<PathBuf>,
        /// Use synthetic weights even if FILE is given.
        #[arg(long)]
        synthetic: bool,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// The record layout to measure (see `compress --layout`).
        #[arg(long, value_enum, default_value = df11::Layout::default().name())]
        layout: LayoutArg,
    },
    /// List the tensors of a checkpoint with their compression.
    ///
    /// For each tensor: dtype, shape, original and stored size, stored bits
    /// per weight and the bound 8 + H(exponent) (the raw sign/mantissa byte
    /// plus the exponent's entropy), then totals.
    ///
    /// Example: df11 inspect model-df11/ --json
    Inspect {
        /// File or directory.
        file: PathBuf,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// For DFloat11 input: JSON file mapping weight names to shapes.
        #[arg(long, value_name = "FILE")]
        shapes: Option<PathBuf>,
    },
    /// Generate tokens with a Llama-family model from compressed weights.
    ///
    /// MODEL_DIR is a checkpoint directory with config.json: df11, DFloat11 or
    /// plain bf16. Every transformer block stays compressed in memory and is
    /// decoded into one reused buffer just before it runs. With
    /// --compare-bf16, the same model is run from a plain bf16 checkpoint and
    /// the logits of every step are compared bit for bit (exit 1 if they
    /// differ).
    ///
    /// Example: df11 run model-df11/ --prompt-tokens 1,2,3 --compare-bf16 model/
    #[cfg(feature = "candle")]
    Run {
        /// Checkpoint directory.
        #[arg(value_name = "MODEL_DIR")]
        model: PathBuf,
        /// The prompt as token ids.
        #[arg(
            long,
            value_name = "IDS",
            value_delimiter = ',',
            conflicts_with = "prompt",
            required_unless_present = "prompt"
        )]
        prompt_tokens: Option<Vec<u32>>,
        /// The prompt as text (needs MODEL_DIR/tokenizer.json).
        #[arg(long, value_name = "TEXT")]
        prompt: Option<String>,
        /// Tokens to generate.
        #[arg(long, value_name = "N", default_value_t = 16)]
        max_new_tokens: usize,
        /// Where to run.
        #[arg(long, value_parser = ["cpu", "cuda"], default_value = "cpu")]
        device: String,
        /// A plain bf16 checkpoint of the same model to compare logits with.
        #[arg(long, value_name = "BF16_DIR")]
        compare_bf16: Option<PathBuf>,
        /// Print one JSON object instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Compress { format, .. } = &cli.command
        && let Some(m) = matches.subcommand_matches("compress")
    {
        check_format_options(m, *format);
    }
    let common = cli::Common { quiet: cli.quiet };
    // Stopped by a signal, a run leaves neither outputs (they never are
    // under their final names until complete) nor their hidden temporaries.
    // Without the handler (it fails only if one is set already) the signal
    // still stops the run, only leaving the temporaries.
    let _ = ctrlc::set_handler(|| {
        INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
        let removed = df11::checkpoint::output::remove_unfinished();
        let what = if removed > 0 { "; the unfinished output was removed" } else { "" };
        eprintln!("df11: interrupted{what}");
        std::process::exit(130);
    });
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = cli.threads {
        pool = pool.num_threads(n as usize);
    }
    let result = match pool.build() {
        Ok(pool) => pool.install(|| run(cli.command, cli.threads.map(usize::from), common)),
        Err(e) => Err(error::err!("cannot start worker threads: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A write that failed because the handler removed its temporary:
        // the handler reports and exits.
        Err(_) if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) => loop {
            std::thread::park();
        },
        Err(e) => {
            eprintln!("df11: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Set by the signal handler before it removes the unfinished outputs.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Options of `compress` that only one `--format` reads are usage errors with the other.
fn check_format_options(m: &clap::ArgMatches, format: FormatArg) {
    let given = |id: &str| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let msg = match format {
        FormatArg::Dfloat11 if given("segment_rows") || given("layout") => {
            "--segment-rows and --layout shape df11 containers; DFloat11's layout is fixed (--format dfloat11)"
        }
        FormatArg::Dfloat11 if given("shapes") => {
            "--shapes is for DFloat11 input, which --format dfloat11 does not take"
        }
        FormatArg::Df11 if given("pattern_dict") || given("keep_unencodable") => {
            "--pattern-dict and --keep-unencodable only apply with --format dfloat11"
        }
        _ => return,
    };
    let mut cmd = Cli::command();
    let sub = cmd.find_subcommand_mut("compress").expect("compress is a subcommand").clone();
    sub.bin_name("df11 compress").error(clap::error::ErrorKind::ArgumentConflict, msg).exit()
}

fn run(command: Command, threads: Option<usize>, common: cli::Common) -> error::Result<()> {
    let decoder = |gpu: bool| cli::decoder(gpu);
    match command {
        Command::Compress {
            input, output, force, format: FormatArg::Dfloat11, pattern_dict, keep_unencodable, ..
        } => cli::compress::run_dfloat11(&input, &output, pattern_dict.as_deref(), keep_unencodable, force, common),
        Command::Compress { input, output, force, shapes, segment_rows, layout, .. } => {
            let opts = df11::EncodeOptions { segment_rows, layout: layout.into() };
            cli::compress::run(&input, &output, shapes.as_deref(), force, opts, common)
        }
        Command::Decompress { input, output, force, gpu, shapes } => {
            cli::decompress::run(&input, &output, shapes.as_deref(), force, &*decoder(gpu)?, common)
        }
        Command::Verify { original, compressed, gpu, shapes } => {
            cli::verify::run(&original, &compressed, shapes.as_deref(), &*decoder(gpu)?, common)
        }
        Command::Bench { file, synthetic, json, layout } => {
            let what = file.as_ref().map_or("synthetic weights".into(), |f| f.display().to_string());
            let opts = df11::bench::BenchOptions { file, synthetic, threads, json, layout: layout.into() };
            let report = df11::bench::run(&opts).map_err(|e| error::err!("bench on {what}: {e}"))?;
            let mut out = report;
            if !out.ends_with('\n') {
                out.push('\n');
            }
            // A closed pipe (`df11 bench | head`) is not worth an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
            Ok(())
        }
        Command::Inspect { file, json, shapes } => {
            cli::inspect::run(&file, shapes.as_deref(), json, &*decoder(false)?, common)
        }
        #[cfg(feature = "candle")]
        Command::Run { model, prompt_tokens, prompt, max_new_tokens, device, compare_bf16, json } => {
            let args = df11::candle::RunArgs { model, prompt_tokens, prompt, max_new_tokens, device, compare_bf16 };
            cli::run::run(&args, json)
        }
    }
}
