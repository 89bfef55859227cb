//! One module per top-level subcommand.

pub mod data;
pub mod quickstart;
