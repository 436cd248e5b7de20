//! The `switchyard` command; everything lives in the library so tests can drive it.

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
