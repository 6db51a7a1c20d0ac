//! Runs `df11::bench` the way `df11 bench` does:
//! `cargo run --release --example bench -- [--threads N] [--json] [FILE]`.

use df11::bench::{BenchOptions, run};

fn main() {
    let mut opts = BenchOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => opts.threads = args.next().and_then(|n| n.parse().ok()),
            "--json" => opts.json = true,
            "--synthetic" => opts.synthetic = true,
            file => opts.file = Some(file.into()),
        }
    }
    match run(&opts) {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
