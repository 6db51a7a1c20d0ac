//! The `df11` command-line tool.

fn main() {
    println!("df11 {}", env!("CARGO_PKG_VERSION"));
}
