//! The `enact` binary: everything is in the library, [`enact::cli::main`] runs a command.

use std::process::ExitCode;

// A plan of 10,000 services makes and frees millions of small values; mimalloc does that
// markedly faster than the system allocator (see benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    enact::cli::main()
}
