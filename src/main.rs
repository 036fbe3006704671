use std::process::ExitCode;

fn main() -> ExitCode {
    enact::cli::main()
}
