//! The `aido` command-line tool. `aido --help` lists the subcommands.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
