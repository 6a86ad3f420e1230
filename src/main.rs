//! `cc-ci`: a thin shell over the `ccci` library. Parse, dispatch, print the error
//! chain once, exit with a pinned code.
use clap::Parser;

fn main() {
    let cli = ccci::cli::Cli::parse();
    match ccci::cli::dispatch(cli) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("cc-ci: error: {err:#}");
            std::process::exit(ccci::cli::EXIT_ERROR);
        }
    }
}
