//! `chatgate-bench`: load tools for chatgate (see `loadtest/README.md`).
//! Parses flags, runs the subcommand, prints its report. Exit codes: 0 when
//! the run's checks held, 2 when it ran but a check failed (loss, disorder,
//! drops, failed handshakes), 1 when it could not run.
//!
//! Must never: hold load logic of its own (it is in the library's modules).

use std::process::ExitCode;

use chatgate_bench::args::{execute, BenchCli};
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("chatgate-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let outcome = execute(BenchCli::parse())?;
    println!("{}", outcome.report);
    Ok(outcome.ok)
}
