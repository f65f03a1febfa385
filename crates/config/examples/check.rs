//! `cargo run -p snirouter-config --example check -- FILE`: validate a file and print the
//! diagnostics or the effective configuration as JSON-ish debug output.
fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: check FILE");
        std::process::exit(2);
    };
    match snirouter_config::load(std::path::Path::new(&path)) {
        Ok(cfg) => println!("{cfg:#?}"),
        Err(d) => {
            eprintln!("{d}");
            std::process::exit(1);
        }
    }
}
