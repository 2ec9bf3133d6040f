//! `cargo xtask wasi`: the official wasi-testsuite through Kiln (being built).

use anyhow::{bail, Result};

pub fn run(_args: Vec<String>) -> Result<()> {
    bail!("`cargo xtask wasi` is not implemented yet")
}
