use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = backup::cli::Cli::parse();
    backup::run(cli).into()
}
