//! One libtest-mimic trial per `.wast` file: Kiln's own scripts under `tests/wast/`, and the
//! official testsuites when `WASM_SPEC_TESTSUITE` (2.0) and `WASM_SPEC_TESTSUITE_3_0` point at
//! them (reported as ignored otherwise).
//!
//! The official files are checked against their suite's ratchet (`expected-failures.txt`,
//! `expected-failures-3.0.txt`): a file listed there must
//! still fail (an unexpected pass fails the trial, so the list can only shrink); any other file
//! must pass with nothing failed and nothing skipped.

use std::path::{Path, PathBuf};

use kiln_spec_tests::Edition;
use libtest_mimic::{Arguments, Failed, Trial};

fn run(edition: Edition, path: &Path, expect_failure: bool) -> Result<(), Failed> {
    let report = match kiln_spec_tests::run_suite_file(edition, path) {
        Ok(report) => report,
        // A script Kiln cannot even parse counts as failing.
        Err(_) if expect_failure => return Ok(()),
        Err(e) => return Err(format!("{e:#}").into()),
    };
    let clean = report.counts.failed == 0 && report.counts.skipped == 0;
    if expect_failure {
        return if clean {
            Err(format!("{} now passes: remove it from {}", path.display(), edition.expected_failures_file()).into())
        } else {
            Ok(())
        };
    }
    if clean {
        return Ok(());
    }
    let mut message = format!(
        "{} passed, {} failed, {} skipped\n",
        report.counts.passed, report.counts.failed, report.counts.skipped
    );
    for line in report.failures.iter().chain(&report.skips).take(40) {
        message.push_str(line);
        message.push('\n');
    }
    Err(message.into())
}

fn main() {
    let args = Arguments::from_args();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut trials = Vec::new();

    for path in kiln_spec_tests::wast_files(&manifest.join("tests/wast")) {
        let name = format!("kiln::{}", path.file_stem().unwrap().to_string_lossy());
        trials.push(Trial::test(name, move || run(Edition::Wasm2, &path, false)));
    }

    for edition in Edition::ALL {
        let expected_failures = edition.expected_failures();
        let prefix = match edition {
            Edition::Wasm2 => "spec",
            Edition::Wasm3 => "spec3",
        };
        match std::env::var_os(edition.env_var()).map(PathBuf::from) {
            Some(suite) if suite.is_dir() => {
                for path in kiln_spec_tests::wast_files(&suite) {
                    let relative = path.strip_prefix(&suite).unwrap().to_string_lossy().replace('\\', "/");
                    let expect_failure = expected_failures.contains(&relative);
                    let name = format!("{prefix}::{}", relative.trim_end_matches(".wast").replace('/', "::"));
                    trials.push(Trial::test(name, move || run(edition, &path, expect_failure)));
                }
            }
            _ => {
                trials.push(Trial::test(format!("{prefix}::testsuite"), || Ok(())).with_ignored_flag(true));
                eprintln!(
                    "note: {} is not set (or not a directory): the official {} testsuite trials are ignored",
                    edition.env_var(),
                    edition.version()
                );
            }
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
