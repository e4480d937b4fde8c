use std::process::ExitCode;

fn main() -> ExitCode {
    backup::run(std::env::args_os()).into()
}
