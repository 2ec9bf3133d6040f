//! Fetching a pinned commit of a public testsuite with git, for users without a local copy.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

/// Shallow-fetches `commit` of `repo` into `dir` and checks it out. On failure the directory is
/// removed, so a later run does not mistake a partial checkout for a suite.
pub fn pinned_commit(repo: &str, commit: &str, dir: &Path) -> Result<()> {
    let result = (|| -> Result<()> {
        let git = |args: &[&str]| -> Result<()> {
            if !Command::new("git").args(args).current_dir(dir).status()?.success() {
                bail!("git {} failed", args.join(" "));
            }
            Ok(())
        };
        std::fs::create_dir_all(dir)?;
        git(&["init", "-q"])?;
        git(&["fetch", "-q", "--depth", "1", repo, commit])?;
        git(&["checkout", "-q", "FETCH_HEAD"])?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}
