//! The README's fenced blocks, for the tests that run what it shows (`readme.rs` and
//! `serve.rs`, which include this file).

use std::path::Path;

/// A fenced block: its info string and its text.
pub struct Block<'a> {
    pub info: &'a str,
    pub text: String,
}

/// The fenced blocks of a Markdown text, in order.
pub fn blocks(markdown: &str) -> Vec<Block<'_>> {
    let mut blocks = Vec::new();
    let mut open: Option<Block<'_>> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some(Block { info: info.trim(), text: String::new() }),
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// Writes every block whose info string names a file (```` ```wat file=fib.wat ````) into
/// `dir`, under that name.
pub fn write_files(blocks: &[Block<'_>], dir: &Path) -> std::io::Result<()> {
    for block in blocks {
        if let Some(name) = block.info.split_whitespace().find_map(|word| word.strip_prefix("file=")) {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().expect("a file in the scratch directory"))?;
            std::fs::write(path, &block.text)?;
        }
    }
    Ok(())
}
