//! The `callbox` binary: a thin entry into the library's command line.

fn main() -> std::process::ExitCode {
    callbox::cli::main()
}
