//! `cargo run -p snirouter-config --example check -- FILE`: validate a file and print the
//! diagnostics or the effective configuration as JSON-ish debug output.
fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: check FILE");
        std::process::exit(2);
    };
    let source = match std::fs::read_to_string(&path) {
        Ok(source) => source,
        Err(e) => {
            eprintln!("{path}: cannot read the configuration file: {e}");
            std::process::exit(1);
        }
    };
    match snirouter_config::parse(&source, &path) {
        Ok(cfg) => println!("{cfg:#?}"),
        Err(d) => {
            eprintln!("{d}");
            std::process::exit(1);
        }
    }
}
