//! `scalenet-experiments compare` keeps working without Fashion-MNIST: on small IDX files the test
//! writes, it trains every scalenet method on both architectures, records each copy, resumes
//! without training again, and tables PyTorch's records beside its own (the PyTorch script itself
//! runs in an ignored test, `.ci/run` runs it with Debian's python3-torch).

use scalenet::data::binary::idx_bytes;
use std::path::Path;
use std::process::Command;

/// A folder with Fashion-MNIST's four file names: `train` and `test` 28x28 images whose class
/// decides which row band is bright, plus deterministic noise.
fn dataset(name: &str, train: u32, test: u32) -> tempfile::TempDir {
    let folder = tempfile::Builder::new().prefix(&format!("scalenet-compare-{name}-")).tempdir().unwrap();
    let dir = folder.path();
    for (stem, count) in [("train", train), ("t10k", test)] {
        let labels: Vec<u8> = (0..count).map(|i| (i * 7 % 10) as u8).collect();
        let mut pixels = Vec::with_capacity(count as usize * 784);
        for (i, &label) in labels.iter().enumerate() {
            for p in 0..784usize {
                let band = (p / 28) / 3 == label as usize;
                let noise = ((i * 131 + p * 31) % 61) as u8;
                pixels.push(if band { 180 + noise } else { noise });
            }
        }
        std::fs::write(dir.join(format!("{stem}-images-idx3-ubyte")), idx_bytes(&[count, 28, 28], &pixels)).unwrap();
        std::fs::write(dir.join(format!("{stem}-labels-idx1-ubyte")), idx_bytes(&[count], &labels)).unwrap();
    }
    folder
}

fn experiments(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_scalenet-experiments")).args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

fn records(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn every_scalenet_method_trains_on_both_architectures_and_resumes() {
    let folder = dataset("rust", 64, 40);
    let data = folder.path();
    let out = data.join("out");
    let args = ["compare", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quick"];
    let (ok, stdout, stderr) = experiments(&args);
    assert!(ok, "{stderr}");
    let written = records(&out);
    // 2 architectures x 2 inits x 2 rates x 1 seed.
    assert_eq!(written.len(), 8, "{stdout}");
    for arch in ["resnet", "vgg"] {
        for method in ["scalenet", "scalenet-fan_in"] {
            let mine: Vec<_> = written.iter().filter(|r| r["arch"] == arch && r["method"] == method).collect();
            assert_eq!(mine.len(), 2, "{arch} {method}: {written:?}");
            for record in mine {
                let accuracy = record["test_accuracy"].as_f64().expect("a small rate does not diverge in 4 steps");
                assert!((0.0..=1.0).contains(&accuracy), "{record}");
                assert!(record["final_loss"].as_f64().is_some_and(f64::is_finite), "{record}");
                assert_eq!((record["train_examples"].as_u64(), record["test_examples"].as_u64()), (Some(64), Some(40)));
            }
        }
    }
    let table = std::fs::read_to_string(out.join("compare.md")).unwrap();
    for part in ["### resnet", "### vgg", "| scalenet |", "| scalenet-fan_in |"] {
        assert!(table.contains(part), "{part}: {table}");
    }
    assert!(out.join("compare.png").is_file());

    // A second invocation finds every copy done and trains nothing.
    let (ok, stdout, stderr) = experiments(&args);
    assert!(ok, "{stderr}");
    assert_eq!(records(&out).len(), 8, "{stdout}");
    assert!(!stdout.contains("lr 0.1 seed 0:"), "trained again: {stdout}");
}

#[test]
fn records_of_other_tools_join_the_table_and_bad_lines_name_their_place() {
    let folder = dataset("report", 64, 40);
    let data = folder.path();
    let out = data.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let protocol = r#""epochs": 1, "batch": 16, "train_examples": 64, "test_examples": 40"#;
    let lines = [
        format!(r#"{{{protocol}, "method": "torch-batchnorm", "arch": "resnet", "lr": 0.1, "seed": 0, "test_accuracy": 0.5}}"#),
        format!(r#"{{{protocol}, "method": "torch-batchnorm", "arch": "resnet", "lr": 0.025, "seed": 0, "test_accuracy": 0.3}}"#),
        format!(r#"{{{protocol}, "method": "torch-plain", "arch": "resnet", "lr": 0.1, "seed": 0, "test_accuracy": null}}"#),
        format!(r#"{{{protocol}, "method": "torch-plain", "arch": "resnet", "lr": 0.025, "seed": 0, "test_accuracy": 0.2}}"#),
        // Another protocol: kept in the file, left out of the table.
        r#"{"epochs": 5, "batch": 16, "train_examples": 64, "test_examples": 40, "method": "torch-fixup", "arch": "resnet", "lr": 0.1, "seed": 0, "test_accuracy": 0.9}"#.to_string(),
    ];
    std::fs::write(out.join("results.jsonl"), lines.join("\n") + "\n").unwrap();
    let args =
        ["compare", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quick", "--report-only"];
    let (ok, stdout, stderr) = experiments(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("| torch-batchnorm | 0.1 | 50.00% ± 0.00 | 1 | 1 (0.1) | 2 | 0 |"), "{stdout}");
    // The diverged run counts as 0: the best rate is the smaller one.
    assert!(stdout.contains("| torch-plain | 0.025 | 20.00% ± 0.00 | 1 | 1 (0.025) | 2 | 1 |"), "{stdout}");
    assert!(!stdout.contains("torch-fixup"), "{stdout}");

    std::fs::write(out.join("results.jsonl"), "{\"epochs\": 1,\n").unwrap();
    let (ok, _, stderr) = experiments(&args);
    assert!(!ok);
    assert!(stderr.contains("results.jsonl:1: not a JSON record") && stderr.contains("remove the line"), "{stderr}");
}

#[test]
fn a_folder_without_the_test_files_names_them() {
    let folder = dataset("missing", 16, 8);
    let data = folder.path();
    std::fs::remove_file(data.join("t10k-images-idx3-ubyte")).unwrap();
    let (ok, _, stderr) =
        experiments(&["compare", "--data", data.to_str().unwrap(), "--out", data.join("out").to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("t10k-images-idx3-ubyte[.gz]") && stderr.contains("dataset-fashion-mnist"), "{stderr}");
    let (ok, _, stderr) = experiments(&["compare", "--out", data.join("out").to_str().unwrap(), "--output-std=-1"]);
    assert!(!ok);
    assert!(stderr.contains("--output-std -1: give a positive std, or 0 for no calibration"), "{stderr}");
}

/// PyTorch's methods (BatchNorm, no normalization, Fixup) train a few steps on the same files and
/// their records join the tool's table. Needs PyTorch: `.ci/run` installs Debian's python3-torch
/// and runs it with `--ignored`.
#[test]
#[ignore = "needs PyTorch (apt install python3-torch); .ci/run runs it"]
fn the_pytorch_methods_train_on_the_same_files() {
    let folder = dataset("torch", 64, 40);
    let data = folder.path();
    let out = data.join("out");
    let python = std::env::var("SCALENET_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/compare_torch.py");
    let output = Command::new(&python)
        .arg(&script)
        .args(["--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--epochs", "1", "--batch-size", "16", "--lr-grid", "0.1,0.025", "--seeds", "1", "--threads", "1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let written = records(&out);
    // ResNet: batchnorm, plain, fixup; VGG: batchnorm, plain; 2 rates each.
    assert_eq!(written.len(), 10, "{written:?}");
    let args =
        ["compare", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quick", "--report-only"];
    let (ok, stdout, stderr) = experiments(&args);
    assert!(ok, "{stderr}");
    for part in ["| torch-batchnorm |", "| torch-plain |", "| torch-fixup |", "### vgg"] {
        assert!(stdout.contains(part), "{part}: {stdout}");
    }
}
