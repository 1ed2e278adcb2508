//! The experiments tool's errors, as a user meets them: each names the flag and the path at
//! fault and what to do, is printed with Display (never a Debug-printed `Os { .. }`), and comes
//! before anything is announced.

use std::process::Command;

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("scalenet-cli-{name}-")).tempdir().unwrap()
}

/// Runs the tool; returns (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_scalenet-experiments")).args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

fn expect_failure(args: &[&str], expected: &[&str]) {
    let (ok, stdout, stderr) = run(args);
    assert!(!ok, "{args:?} succeeded: {stdout}");
    for part in expected {
        assert!(stderr.contains(part), "{args:?}: expected `{part}` in: {stderr}");
    }
    assert!(!stderr.contains("Os {") && !stderr.contains("Empty("), "{args:?}: a Debug-printed error: {stderr}");
    assert!(!stdout.contains("results in"), "{args:?}: announced before failing: {stdout}");
}

#[test]
fn table2_names_the_flag_and_path_at_fault() {
    let folder = scratch("table2");
    let dir = folder.path();
    let out = dir.join("out");
    let missing = dir.join("no-such-folder");
    expect_failure(
        &["table2", "--data", missing.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &["error: --data", "no-such-folder", "pass an existing folder"],
    );
    let file = dir.join("a-file.svm");
    std::fs::write(&file, "1 1:0.5\n").unwrap();
    expect_failure(
        &["table2", "--data", file.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &["error: --data", "a-file.svm: this is a file; pass the folder"],
    );
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    expect_failure(
        &["table2", "--data", data.to_str().unwrap(), "--out", file.to_str().unwrap()],
        &["error: --out", "a-file.svm: this is a file; pass a folder"],
    );
    std::fs::write(data.join("broken.svm"), "not a libsvm line\n").unwrap();
    std::fs::write(data.join("empty.svm"), "").unwrap();
    expect_failure(
        &["table2", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quick"],
        &["skipping", "broken.svm", "no dataset could be read (2 files", "LIBSVM"],
    );
}

#[test]
fn every_subcommand_checks_its_paths_first() {
    let folder = scratch("others");
    let dir = folder.path();
    let file = dir.join("taken");
    std::fs::write(&file, "").unwrap();
    expect_failure(&["triangle", "--out", file.to_str().unwrap(), "--quick"], &["error: --out", "this is a file"]);
    expect_failure(
        &["mirrored", "--data", dir.join("none.svm").to_str().unwrap(), "--out", dir.join("m").to_str().unwrap()],
        &["error: --data", "none.svm", "pass an existing file"],
    );
    expect_failure(
        &["alexnet", "--data", dir.join("none").to_str().unwrap(), "--out", dir.join("a").to_str().unwrap()],
        &["error: --data", "pass an existing folder"],
    );
}

#[test]
fn precision_measures_both_networks_against_their_plans() {
    let folder = scratch("precision");
    let dir = folder.path();
    let file = dir.join("taken");
    std::fs::write(&file, "").unwrap();
    expect_failure(&["precision", "--out", file.to_str().unwrap()], &["error: --out", "this is a file"]);
    let out = dir.join("out");
    let (ok, stdout, stderr) = run(&[
        "precision",
        "--out",
        out.to_str().unwrap(),
        "--seeds",
        "2",
        "--batch-size",
        "8",
        "--trained-epochs",
        "0",
    ]);
    assert!(ok, "{stderr}");
    let written = std::fs::read_to_string(out.join("precision.md")).unwrap();
    assert_eq!(written, stdout);
    for part in ["## digits LeNet: loss scale 2^", "## digits strided ResNet: loss scale 2^", "| conv1 |", "| stem |"] {
        assert!(written.contains(part), "{part}: {written}");
    }
    // Every measured ratio is a number (no NaN from a signal lost in f16).
    assert!(!written.contains("NaN") && !written.contains("| not finite"), "{written}");
}

#[test]
fn help_shows_every_flag_with_its_default() {
    let (ok, stdout, _) = run(&["table2", "--help"]);
    assert!(ok);
    for flag in ["--seeds", "--epochs", "--batch-size", "--lr-grid", "--max-examples", "--threads", "--device"] {
        let line =
            stdout.lines().find(|l| l.trim_start().starts_with(flag)).unwrap_or_else(|| panic!("{flag}: {stdout}"));
        let described = stdout.split(line).nth(1).unwrap_or_default().lines().next().unwrap_or_default();
        assert!(line.len() > flag.len() + 10 || !described.trim().is_empty(), "{flag} has no help: {stdout}");
    }
    assert!(
        stdout.contains("default: 10, 2 with --quick") && stdout.contains("default: 5, 1 with --quick"),
        "{stdout}"
    );
}
