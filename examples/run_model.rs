//! What `df11 run` does, until the CLI has the subcommand:
//! `cargo run --release --features candle --example run_model -- MODEL_DIR
//! [--prompt-tokens 1,2,3 | --prompt TEXT] [--max-new-tokens N] [--device cpu|cuda]
//! [--compare-bf16 BF16_DIR]`; prints the report as JSON.

use df11::candle::{RunArgs, run_cli};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut run = RunArgs {
        model: Default::default(),
        prompt_tokens: None,
        prompt: None,
        max_new_tokens: 16,
        device: "cpu".into(),
        compare_bf16: None,
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--prompt-tokens" => {
                run.prompt_tokens = Some(value().split(',').map(|t| t.trim().parse().expect("a token id")).collect())
            }
            "--prompt" => run.prompt = Some(value()),
            "--max-new-tokens" => run.max_new_tokens = value().parse().expect("a number"),
            "--device" => run.device = value(),
            "--compare-bf16" => run.compare_bf16 = Some(value().into()),
            dir => run.model = dir.into(),
        }
    }
    if run.prompt.is_none() && run.prompt_tokens.is_none() {
        run.prompt_tokens = Some(vec![1, 2, 3, 4]);
    }
    match run_cli(&run) {
        Ok(r) => println!("{}", serde_json::to_string_pretty(&r).expect("the report serializes")),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
