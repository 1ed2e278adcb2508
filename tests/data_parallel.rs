//! Data-parallel training over MPI: two processes with minibatches of 32 take the steps of one
//! process with minibatches of 64; a rank that dies or stops answering ends the job with an error
//! naming it, never a hang; an anomaly on one rank stops every rank with the same message.
//!
//! Needs `--features mpi` and `mpirun` on the PATH (`.ci/run` installs Debian's Open MPI). Each
//! test runs this very binary under `mpirun -np 2`, selecting the `#[ignore]`d `rank_program`
//! below, the program every rank runs (ignored when the suite runs by itself: it needs `mpirun`'s
//! environment).
#![cfg(feature = "mpi")]

use candle_core::DType;
use candle_nn::{loss, ModuleT, Optimizer, VarMap};
use fixtures::networks::{DigitsLeNet, DigitsResNet};
use scalenet::calculus::precision::OutputGradient;
use scalenet::calculus::Format;
use scalenet::checkpoint::load_checkpoint;
use scalenet::data::ImageDataset;
use scalenet::distributed::{save_on_rank0, Collective, DataParallel, Launch, SingleProcess};
use scalenet::finite::TrainingWatch;
use scalenet::optim::{ParamsSgd, Sgd};
use scalenet::precision::{LossScaler, MixedPrecision};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STEPS: usize = 20;
/// A rate at which the 20 steps descend smoothly: with the output at unit std (the default), 0.1
/// makes the loss jump at some steps, and every jump amplifies rounding (f32 then leaves f64's
/// trajectory), which would blur what the f16 comparison measures.
const LR: f64 = 0.005;
/// f16 rounds each rank's weight gradient (a sum over 32 examples) before the average, one
/// process the sum over 64: they differ by f16's rounding, about 1e-3 of a gradient.
const TOLERANCE_F16: f64 = 1e-3;

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("scalenet-data-parallel-{name}-")).tempdir().unwrap()
}

/// The bundled digits as the examples prepare them (upsampled by `factor`), first epoch's order.
fn digits(factor: usize, dtype: DType) -> ImageDataset {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.safetensors");
    let data = ImageDataset::from_safetensors(path).unwrap().standardized().unwrap();
    let data = data.upsampled(factor).unwrap().shuffled(0).unwrap();
    let data = data.split(1500).unwrap().0.shuffled(1).unwrap();
    ImageDataset { images: data.images.to_dtype(dtype).unwrap(), ..data }
}

/// A network of the examples, `name` being `lenet` or `resnet` and `-f64` (`-f16`) after it asking
/// for f64 parameters (f16 ones, trained with f32 masters): its variables, the module, the
/// upsampling factor of its data, the dtype.
fn network(name: &str) -> (VarMap, Box<dyn ModuleT>, usize, DType) {
    let varmap = VarMap::new();
    let device = candle_core::Device::Cpu;
    let (name, dtype) = match (name.strip_suffix("-f64"), name.strip_suffix("-f16")) {
        (Some(name), _) => (name, DType::F64),
        (_, Some(name)) => (name, DType::F16),
        _ => (name, DType::F32),
    };
    let (net, factor): (Box<dyn ModuleT>, usize) = match name {
        "lenet" => (Box::new(DigitsLeNet::new_seeded(&varmap, dtype, &device, 0).unwrap()), 4),
        "resnet" => (Box::new(DigitsResNet::new_seeded(&varmap, dtype, &device, 0).unwrap()), 2),
        other => panic!("no network {other}"),
    };
    (varmap, net, factor, dtype)
}

/// What a rank does at a step, for the failure tests.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    Abort,
    Hang,
    NanInput,
}

/// Trains `steps` SGD steps on `collective`'s share of the data, `batch` examples per rank and
/// step; rank 0 saves a checkpoint to `checkpoint` after step `save_after` (if any); rank 1 meets
/// `fault` at step 5.
fn train(
    name: &str,
    collective: Arc<dyn Collective>,
    batch: usize,
    steps: usize,
    checkpoint: Option<(&Path, usize)>,
    fault: Fault,
) -> Result<VarMap, Box<dyn std::error::Error>> {
    let (varmap, net, factor, dtype) = network(name);
    let data = digits(factor, dtype).shard(collective.rank(), collective.world_size())?;
    // In f16: f32 masters, the calculus's loss scale for the whole batch of the step (the same
    // for 2 x 32 and 1 x 64, so that both take the same steps), the masters averaged.
    let mut mixed = (dtype == DType::F16)
        .then(|| {
            let gradient = OutputGradient::cross_entropy(10, 64);
            let scaler = LossScaler::for_plan(DigitsLeNet::plan(), Format::F16, gradient);
            MixedPrecision::<Sgd>::new(&varmap, scaler, ParamsSgd::new(LR))
        })
        .transpose()?;
    let data_parallel = match &mixed {
        Some(mixed) => mixed.data_parallel(collective.clone())?,
        None => DataParallel::new(collective.clone(), &varmap)?,
    };
    let mut sgd = Sgd::new(varmap.all_vars(), ParamsSgd::new(LR))?;
    let mut watch = TrainingWatch::new();
    for (step, batch) in data.batches(batch).take(steps).enumerate() {
        let (mut images, labels) = batch?;
        if collective.rank() == 1 && step == 5 {
            match fault {
                Fault::None => {}
                Fault::Abort => std::process::abort(),
                Fault::Hang => std::thread::sleep(Duration::from_secs(3600)),
                Fault::NanInput => images = (images * f64::NAN)?,
            }
        }
        let loss = loss::cross_entropy(&net.forward_t(&images, true)?.to_dtype(DType::F32)?, &labels)?;
        match &mut mixed {
            Some(mixed) => {
                let outcome = mixed.backward_step_data_parallel(&loss, &data_parallel)?;
                assert!(outcome.applied(), "step {step} skipped at the calculus's scale");
            }
            None => {
                watch.backward_step_data_parallel(&mut sgd, &varmap, &loss, &data_parallel)?;
            }
        }
        let saved = mixed.as_ref().map_or(&varmap, |mixed| mixed.masters());
        if let Some((path, after)) = checkpoint {
            if step + 1 == after {
                save_on_rank0(collective.as_ref(), saved, path)?;
            }
        }
    }
    // The f32 masters in mixed precision.
    Ok(mixed.map_or(varmap, |mixed| mixed.masters().clone()))
}

/// The program of each rank under `mpirun`: what to do is in `SCALENET_DP_*`.
#[test]
#[ignore = "a rank's program, run under mpirun by the tests of this file"]
fn rank_program() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let fault = match std::env::var("SCALENET_DP_FAULT").unwrap_or_default().as_str() {
        "abort" => Fault::Abort,
        "hang" => Fault::Hang,
        "nan" => Fault::NanInput,
        _ => Fault::None,
    };
    let out = PathBuf::from(var("SCALENET_DP_OUT"));
    let collective = Launch::from_env().unwrap().connect().unwrap();
    let rank = collective.rank();
    let checkpoint = out.join("checkpoint.safetensors");
    let save_after = var("SCALENET_DP_SAVE_AFTER").parse().unwrap();
    let steps = var("SCALENET_DP_STEPS").parse().unwrap();
    match train(&var("SCALENET_DP_NETWORK"), collective.clone(), 32, steps, Some((&checkpoint, save_after)), fault) {
        Ok(_) => println!("rank {rank}: done"),
        // Each rank prints its error; the parent compares them.
        Err(error) => println!("rank {rank}: error: {error}"),
    }
}

/// Runs `rank_program` on 2 ranks; returns (exit status success, stdout + stderr, seconds).
fn mpirun(out: &Path, vars: &[(&str, &str)]) -> (bool, String, f64) {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new("mpirun");
    command
        .args(["-np", "2", "--oversubscribe"])
        .arg(exe)
        .args(["rank_program", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        // Open MPI refuses to start as root (CI's containers) without these.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("SCALENET_DP_OUT", out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in vars {
        command.env(name, value);
    }
    let start = Instant::now();
    let mut child = command.spawn().expect("mpirun (Debian: apt-get install openmpi-bin libopenmpi-dev)");
    // Never hang the test suite: a job still running after 5 minutes is a failure.
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(300) {
            child.kill().unwrap();
            panic!("mpirun still running after 300 s: the ranks hang");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text, start.elapsed().as_secs_f64())
}

/// The largest difference between the values of two variable sets, and the largest value.
fn largest_difference(a: &VarMap, b: &VarMap) -> (f64, f64) {
    let (a, b) = (a.data().lock().unwrap(), b.data().lock().unwrap());
    let (mut difference, mut largest) = (0f64, 0f64);
    for (name, var) in a.iter() {
        let values = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>();
        let (x, y) = (values(var.as_tensor()).unwrap(), values(b[name].as_tensor()).unwrap());
        for (x, y) in x.iter().zip(&y) {
            difference = difference.max((x - y).abs());
            largest = largest.max(x.abs());
        }
    }
    (difference, largest)
}

fn two_ranks_of_32_step_as_one_of_64(name: &str, tolerance: f64) {
    let folder = scratch(name);
    let out = folder.path();
    let steps = STEPS.to_string();
    let (ok, text, _) = mpirun(
        out,
        &[("SCALENET_DP_NETWORK", name), ("SCALENET_DP_STEPS", &steps), ("SCALENET_DP_SAVE_AFTER", &steps)],
    );
    assert!(ok && text.contains("rank 0: done") && text.contains("rank 1: done"), "{text}");
    // Mixed precision saves and returns the f32 masters: compare them with f32 variables.
    let f32_name = name.strip_suffix("-f16").unwrap_or(name);
    let (two, ..) = network(f32_name);
    load_checkpoint(&two, out.join("checkpoint.safetensors")).unwrap();
    let one = train(name, Arc::new(SingleProcess), 64, STEPS, None, Fault::None).unwrap();
    let (untrained, ..) = network(f32_name);
    let (difference, largest) = largest_difference(&two, &one);
    let (moved, _) = largest_difference(&one, &untrained);
    println!("{name}: after {STEPS} steps, largest difference {difference:.3e} (largest parameter {largest:.3}, moved by up to {moved:.3e})");
    assert!(moved > 1e-3, "{name}: training moved no parameter ({moved:e}): the comparison would prove nothing");
    assert!(difference <= tolerance, "{name}: 2 x 32 and 1 x 64 differ by {difference:e} after {STEPS} steps");
}

#[test]
fn lenet_two_ranks_of_32_step_as_one_of_64() {
    two_ranks_of_32_step_as_one_of_64("lenet", 1e-5);
}

/// In f64: in f32 the ResNet's parameters after 20 steps differ by 1.2e-4, but so do those of
/// one process from itself when each minibatch of 64 is fed in reversed order (measured: 3e-8
/// up to step 10, 1.4e-5 at 12, 1.2e-4 at 20): rounding decides the sign of some pre-activation
/// near zero, whichever way the 64 gradients are summed. In f64 the rounding is too small to
/// decide it and what is left is the algorithm.
#[test]
fn strided_resnet_two_ranks_of_32_step_as_one_of_64() {
    two_ranks_of_32_step_as_one_of_64("resnet-f64", 1e-5);
}

#[test]
fn lenet_in_f64_two_ranks_of_32_step_as_one_of_64() {
    two_ranks_of_32_step_as_one_of_64("lenet-f64", 1e-5);
}

/// Mixed precision: f16 networks, the f32 masters' gradients averaged over the ranks.
#[test]
fn lenet_in_f16_two_ranks_of_32_step_as_one_of_64() {
    two_ranks_of_32_step_as_one_of_64("lenet-f16", TOLERANCE_F16);
}

#[test]
fn a_killed_rank_ends_the_job_and_the_checkpoint_before_it_loads() {
    let folder = scratch("killed");
    let out = folder.path();
    let (ok, text, seconds) = mpirun(
        out,
        &[
            ("SCALENET_DP_NETWORK", "lenet"),
            ("SCALENET_DP_STEPS", "20"),
            ("SCALENET_DP_SAVE_AFTER", "3"),
            ("SCALENET_DP_FAULT", "abort"),
        ],
    );
    assert!(!ok, "the job succeeded though rank 1 aborted:\n{text}");
    assert!(text.contains("rank 1"), "the launcher's message does not name rank 1:\n{text}");
    assert!(seconds < 120.0, "the job took {seconds:.0} s to end");
    // The checkpoint of step 3, written before the failure, is whole and holds step 3's weights.
    let (restored, ..) = network("lenet");
    load_checkpoint(&restored, out.join("checkpoint.safetensors")).unwrap();
    let three = train("lenet", Arc::new(SingleProcess), 64, 3, None, Fault::None).unwrap();
    let (difference, _) = largest_difference(&restored, &three);
    assert!(difference <= 1e-5, "the checkpoint differs from 3 steps of one process by {difference:e}");
}

#[test]
fn a_rank_that_stops_answering_fails_the_others_after_the_timeout() {
    let folder = scratch("stuck");
    let out = folder.path();
    let (ok, text, seconds) = mpirun(
        out,
        &[
            ("SCALENET_DP_NETWORK", "lenet"),
            ("SCALENET_DP_STEPS", "20"),
            ("SCALENET_DP_SAVE_AFTER", "0"),
            ("SCALENET_DP_FAULT", "hang"),
            ("SCALENET_COLLECTIVE_TIMEOUT", "5"),
        ],
    );
    assert!(!ok, "the job succeeded though rank 1 hung:\n{text}");
    assert!(
        text.contains("rank 0: the all-reduce did not complete within 5 s: another rank stopped answering"),
        "rank 0 did not name the timeout:\n{text}"
    );
    assert!(seconds < 120.0, "the job took {seconds:.0} s to end");
}

#[test]
fn a_non_finite_loss_on_one_rank_stops_every_rank_with_the_same_error() {
    let folder = scratch("nan");
    let out = folder.path();
    let (_, text, _) = mpirun(
        out,
        &[
            ("SCALENET_DP_NETWORK", "lenet"),
            ("SCALENET_DP_STEPS", "20"),
            ("SCALENET_DP_SAVE_AFTER", "0"),
            ("SCALENET_DP_FAULT", "nan"),
        ],
    );
    let errors: Vec<&str> =
        text.lines().filter_map(|line| line.split_once(": error: ")).map(|(_, error)| error).collect();
    assert_eq!(errors.len(), 2, "both ranks must stop with an error:\n{text}");
    assert_eq!(errors[0], errors[1], "the ranks disagree:\n{text}");
    assert!(errors[0].starts_with("step 5: the loss is NaN (on rank 1)"), "{}", errors[0]);
}

#[test]
fn table2_split_over_two_ranks_gives_the_table_of_one_process() {
    let folder = scratch("table2");
    let dir = folder.path();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/data/libsvm/iris.svm"), data.join("iris.svm")).unwrap();
    let tool = env!("CARGO_BIN_EXE_scalenet-experiments");
    let table2 = |out: &Path| -> Vec<String> {
        let (data, out) = (data.display().to_string(), out.display().to_string());
        ["table2", "--data", &data, "--out", &out, "--quick"].map(String::from).to_vec()
    };
    let one = dir.join("one");
    let status = Command::new(tool).args(table2(&one)).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    let two = dir.join("two");
    let output = Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe", tool])
        .args(table2(&two))
        .arg("--distributed")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("on 2 processes"), "{stdout}");
    // Each ensemble is seeded by itself, so where it trained changes nothing.
    let read = |dir: &Path| std::fs::read_to_string(dir.join("table2.csv")).unwrap();
    assert_eq!(read(&two), read(&one));
    assert_eq!(std::fs::read_to_string(two.join("results.jsonl")).unwrap().lines().count(), 4);
}
