//! Renders what Kiln emits for a module as one stable text, for the snapshot tests in
//! `tests/snapshots.rs`: per defined function its Cranelift IR, its x86-64 disassembly and its
//! trap table, compiled for the fixed baseline ISA so the text is the same on every machine.
//!
//! The corpus lives in `cases/` (one `.wat` per concern); [`case_names`] lists it.

use std::fmt::Write as _;
use std::path::PathBuf;

use kiln_compiler::emit::FunctionListing;
use kiln_compiler::{CompileError, Compiler};

/// The folder holding the `.wat` corpus.
pub fn cases_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cases")
}

/// The names (file stems) of every `.wat` file in [`cases_dir`], sorted.
pub fn case_names() -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(cases_dir())? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "wat") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.push(stem.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Compiles a module (text or binary) with the baseline compiler and renders its listing.
pub fn render_module(input: &[u8]) -> Result<String, CompileError> {
    let compiler = Compiler::baseline(kiln_compiler::default_features())?;
    let wasm = kiln_compiler::wasm_from_input(input)?;
    let listings = compiler.compile_listing(&wasm)?;
    Ok(render_listings(&listings))
}

/// Renders listings: per function a `;; function N` header, the CLIF, the disassembly and the
/// trap table (`offset -> Code (message)`, one line each). Trailing spaces are stripped so the
/// text survives editors; nothing else is rewritten, because the listing holds no addresses,
/// paths or timestamps (offsets are relative to the function start).
pub fn render_listings(listings: &[FunctionListing]) -> String {
    let mut out = String::new();
    for (i, listing) in listings.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, ";; function {}", listing.index);
        push_block(&mut out, ";; clif", &listing.clif);
        push_block(&mut out, ";; disasm", &listing.disasm);
        out.push_str(";; traps\n");
        if listing.traps.is_empty() {
            out.push_str("(none)\n");
        }
        for trap in &listing.traps {
            let _ = writeln!(out, "{:#x} -> {:?} ({})", trap.offset, trap.code, trap.code);
        }
    }
    out
}

fn push_block(out: &mut String, title: &str, text: &str) {
    out.push_str(title);
    out.push('\n');
    for line in text.trim_end().lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
}
