//! The `bms` command line. `main.rs` only parses arguments; each subcommand lives in its
//! own module under [`cli`] as an args struct plus a `run` function.

pub mod cli;
pub mod gateway;
pub mod report;
pub mod serve;
