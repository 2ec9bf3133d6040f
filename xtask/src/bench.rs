//! `cargo xtask bench`: the seed article's lifecycle benchmarks (being built).

use anyhow::{bail, Result};

pub fn run(_args: Vec<String>) -> Result<()> {
    bail!("`cargo xtask bench` is not implemented yet")
}
