//! `scalenet-experiments`: the paper's experiments on real data.
//!
//! ```text
//! cargo run --release --bin scalenet-experiments -- table2 --data data/libsvm --out out/table2
//! cargo run --release --bin scalenet-experiments -- table2 --data data/libsvm --out out/quick --quick
//! mpirun -np 2 target/release/scalenet-experiments table2 --data data/libsvm --out out/t2 --distributed
//! cargo run --release --bin scalenet-experiments -- mirrored --out docs/experiments/mirrored
//! cargo run --release --bin scalenet-experiments -- triangle --out docs/experiments/triangle
//! cargo run --release --bin scalenet-experiments -- precision --out docs/experiments/precision
//! ```
//!
//! `table2` reads every regular file of `--data` as a LIBSVM dataset (a file that does not parse
//! is reported with its first error and skipped), trains the section 9 network under the four
//! inits over the learning-rate grid and seeds, appends each finished (dataset, init) to
//! `results.jsonl` (a rerun with the same settings skips what is there), and writes the table as
//! `table2.md` and `table2.csv`. See `fixtures::table2` for the protocol. `mirrored` and `triangle`
//! measure the two related methods (docs/related-initializations.md).

use clap::{Parser, Subcommand};
use fixtures::table2::{self, Dataset, Runs, Settings, Table, INITS};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Parser)]
#[command(about = "The scaling calculus paper's experiments on real data")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Table 2: average normalized training loss of the four inits over LIBSVM datasets.
    Table2(Table2Args),
    /// Mirrored orthogonal init (Burkholz & Dubatovka 2019): Jacobian spectra, the exact output
    /// law, and trainability of deep narrow MLPs against Gaussian inits.
    Mirrored(mirrored::MirroredArgs),
    /// The triangle reparameterization (Milkert, Hyde & Laine 2025): exact pieces at
    /// initialization and the x^3 / x^11 fits against He init.
    Triangle(triangle::TriangleArgs),
    /// The strided AlexNet of section 10 (Fig. 4) on CIFAR-10 binary batches or IDX files.
    Alexnet(alexnet::AlexNetArgs),
    /// scalenet's unnormalized networks against BatchNorm, no normalization and Fixup on
    /// Fashion-MNIST: test accuracy per learning rate (scripts/compare_torch.py adds PyTorch's).
    Compare(compare::CompareArgs),
    /// Mixed precision: the calculus's f16 loss scale against measured signals, and the weight
    /// gradients f16 loses to zero with and without it (scalenet::precision).
    Precision(precision::PrecisionArgs),
}

#[derive(clap::Args)]
struct Table2Args {
    /// A folder of LIBSVM files (every regular file is read, whatever its extension).
    #[arg(long)]
    data: PathBuf,
    /// Where results.jsonl, table2.md and table2.csv go.
    #[arg(long)]
    out: PathBuf,
    /// Smoke-run settings: every other rate, 2 seeds, 1 epoch, 300 examples, minibatch 16.
    #[arg(long)]
    quick: bool,
    /// Minibatch size; learning rates stay per sample (the loss is summed over the minibatch)
    /// [default: 1, 16 with --quick].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rates, comma-separated [default: 2^1 .. 2^-12, every other one with --quick].
    #[arg(long, value_delimiter = ',')]
    lr_grid: Option<Vec<f64>>,
    /// Training runs (seeds) per rate, init and dataset [default: 10, 2 with --quick].
    #[arg(long)]
    seeds: Option<u64>,
    /// Passes over each dataset per run [default: 5, 1 with --quick].
    #[arg(long)]
    epochs: Option<usize>,
    /// Use at most this many examples of each dataset [default: all, 300 with --quick].
    #[arg(long)]
    max_examples: Option<usize>,
    /// `off` trains the plain baselines without the calculus's fixed scalars.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    fixed_scalars: String,
    /// Where the networks train.
    #[arg(long, value_enum, default_value = "cpu")]
    device: fixtures::device::DeviceChoice,
    /// Worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Split the (dataset, init) ensembles over the processes of an `mpirun` launch (build with
    /// `--features mpi`): each round, every rank trains one; rank 0 gathers them, writes the log
    /// and the table.
    #[arg(long)]
    distributed: bool,
}

mod alexnet;
mod compare;
mod mirrored;
mod precision;
mod triangle;

/// Writes `text` to a temporary file beside `path`, then renames it over `path`: an interrupted
/// run never leaves a half-written report.
pub(crate) fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// `--data` must name an existing folder.
pub(crate) fn input_folder(flag: &str, path: &Path) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => {
            Err(format!("{flag} {}: this is a file; pass the folder that holds the datasets", path.display()).into())
        }
        Err(error) => {
            Err(format!("{flag} {}: cannot read it ({error}); pass an existing folder", path.display()).into())
        }
    }
}

/// `--data` must name a readable file.
pub(crate) fn input_file(flag: &str, path: &Path) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(format!("{flag} {}: this is a folder; pass a file", path.display()).into()),
        Err(error) => Err(format!("{flag} {}: cannot read it ({error}); pass an existing file", path.display()).into()),
    }
}

/// `--out` is a folder, created with its parents if missing; a file there is an error, not
/// something to overwrite.
pub(crate) fn output_folder(flag: &str, path: &Path) -> Result<(), Error> {
    if path.exists() && !path.is_dir() {
        return Err(format!(
            "{flag} {}: this is a file; pass a folder for the results (it is created if missing)",
            path.display()
        )
        .into());
    }
    std::fs::create_dir_all(path).map_err(|error| {
        format!("{flag} {}: cannot create this folder ({error}); pass a writable folder", path.display()).into()
    })
}

fn main() -> std::process::ExitCode {
    scalenet::ops::park_idle_candle_threads();
    let result = match Cli::parse().command {
        Command::Table2(args) => table2(args),
        Command::Mirrored(args) => mirrored::run(args),
        Command::Triangle(args) => triangle::run(args),
        Command::Alexnet(args) => alexnet::run(args),
        Command::Precision(args) => precision::run(args),
        Command::Compare(args) => compare::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Display, not Debug: every error here says what is at fault and what to do.
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn table2(args: Table2Args) -> Result<(), Error> {
    let mut settings = if args.quick { Settings::quick() } else { Settings::paper() };
    settings.batch_size = args.batch_size.unwrap_or(settings.batch_size);
    settings.learning_rates = args.lr_grid.clone().unwrap_or(settings.learning_rates);
    settings.seeds = args.seeds.unwrap_or(settings.seeds);
    settings.epochs = args.epochs.unwrap_or(settings.epochs);
    settings.max_examples = args.max_examples.or(settings.max_examples);
    settings.fixed_scalars = args.fixed_scalars == "on";
    input_folder("--data", &args.data)?;
    output_folder("--out", &args.out)?;
    let device = args.device.open()?;
    let collective = match args.distributed {
        true => Some(scalenet::distributed::Launch::from_env()?.connect()?),
        false => None,
    };
    let log = args.out.join("results.jsonl");
    let files = table2::dataset_files(&args.data)
        .map_err(|error| format!("--data {}: cannot list the folder ({error})", args.data.display()))?;
    let mut datasets: Vec<Dataset> = Vec::new();
    for path in &files {
        match table2::load(path, &settings) {
            Ok(data) => datasets.push(data),
            Err(error) => eprintln!("skipping {}: {error}", path.display()),
        }
    }
    if datasets.is_empty() {
        return Err(format!(
            "--data {}: no dataset could be read ({} files, each skipped above); pass a folder of LIBSVM files (`label index:value ...` per line), e.g. data/libsvm",
            args.data.display(),
            files.len()
        )
        .into());
    }
    // Announced only once it is known to run, by one process.
    if collective.as_ref().is_none_or(|c| c.rank() == 0) {
        println!(
            "table2: {} datasets; fixed scalars {} for every init; {} rates x {} seeds; results in {}",
            datasets.len(),
            if settings.fixed_scalars { "on" } else { "off" },
            settings.learning_rates.len(),
            settings.seeds,
            log.display()
        );
    }
    let done: Vec<Runs> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| table2::from_json_line(line, &settings))
        .collect();
    let jobs: Vec<(usize, usize)> = (0..datasets.len())
        .flat_map(|d| (0..INITS.len()).map(move |i| (d, i)))
        .filter(|&(d, i)| !done.iter().any(|r| r.dataset == datasets[d].name && r.init == INITS[i]))
        .collect();
    let total: u64 = jobs.iter().map(|&(d, _)| table2::steps(&datasets[d], &settings)).sum();
    let progress = ProgressBar::new(total);
    progress
        .set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}")?);
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let started = std::time::Instant::now();
    let finished = Mutex::new(done);
    let run_job = |(d, i): (usize, usize)| -> Option<Runs> {
        let data = &datasets[d];
        match table2::run(data, INITS[i], &settings, &device, &|n| progress.inc(n)) {
            Ok(runs) => {
                progress.set_message(format!("{} {}", data.name, INITS[i].name()));
                Some(runs)
            }
            Err(error) => {
                progress.suspend(|| eprintln!("{} {}: {error}", data.name, INITS[i].name()));
                None
            }
        }
    };
    let record = |runs: Runs| {
        if let Err(error) = table2::append_line(&log, &table2::to_json_line(&runs, &settings)) {
            progress.suspend(|| eprintln!("cannot append to {}: {error}", log.display()));
        }
        finished.lock().expect("results").push(runs);
    };
    if let Some(collective) = &collective {
        let rank = collective.rank();
        if rank != 0 {
            progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        for round in jobs.chunks(collective.world_size()) {
            let mine = round.get(rank).and_then(|&job| run_job(job));
            for runs in gather_round(collective.as_ref(), round, mine, &datasets, &settings)? {
                if rank == 0 {
                    record(runs);
                }
            }
        }
        if rank != 0 {
            return Ok(());
        }
    } else {
        let queue = Mutex::new(jobs.into_iter());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let Some(job) = queue.lock().expect("queue").next() else { break };
                    if let Some(runs) = run_job(job) {
                        record(runs);
                    }
                });
            }
        });
    }
    progress.finish_and_clear();
    let finished = finished.into_inner().expect("results");
    let table = Table::new(&finished, &settings.learning_rates);
    if table.datasets.is_empty() {
        return Err(format!(
            "no dataset finished under all four inits (the errors are above); nothing written to {}",
            args.out.display()
        )
        .into());
    }
    let markdown = table.to_markdown(&settings);
    write_atomically(&args.out.join("table2.md"), &markdown)?;
    write_atomically(&args.out.join("table2.csv"), &table.to_csv())?;
    let title = format!(
        "Fig. 3: training loss after {} epochs against the learning rate (median, 25-75% over {} seeds), fixed scalars {}",
        settings.epochs,
        settings.seeds,
        if settings.fixed_scalars { "on" } else { "off" }
    );
    table2::figure3(&finished, &settings.learning_rates, &args.out.join("fig3.png"), &title)?;
    println!("{markdown}");
    match &collective {
        Some(c) => println!(
            "{} datasets in {:.1} s on {} processes",
            table.datasets.len(),
            started.elapsed().as_secs_f64(),
            c.world_size()
        ),
        None => println!(
            "{} datasets in {:.1} s on {threads} threads",
            table.datasets.len(),
            started.elapsed().as_secs_f64()
        ),
    }
    Ok(())
}

/// Every rank's result of one round (`round[r]` is rank r's job, `mine` this rank's result), on
/// every rank: the losses of each job in one buffer, summed over the ranks (zero where a rank has
/// no part), with a flag per job for the ranks whose run failed.
fn gather_round(
    collective: &dyn scalenet::distributed::Collective,
    round: &[(usize, usize)],
    mine: Option<Runs>,
    datasets: &[Dataset],
    settings: &Settings,
) -> Result<Vec<Runs>, Error> {
    let (rates, seeds) = (settings.learning_rates.len(), settings.seeds as usize);
    let slot = rates * seeds + 1;
    let mut buffer = vec![0f64; round.len() * slot];
    if let Some(runs) = &mine {
        let start = collective.rank() * slot;
        buffer[start] = 1.0;
        for (k, loss) in runs.losses.iter().flatten().enumerate() {
            buffer[start + 1 + k] = *loss;
        }
    }
    let device = candle_core::Device::Cpu;
    let buffer = collective.all_reduce_sum(&candle_core::Tensor::new(buffer, &device)?)?.to_vec1::<f64>()?;
    Ok(round
        .iter()
        .enumerate()
        .filter(|(r, _)| buffer[r * slot] == 1.0)
        .map(|(r, &(d, i))| Runs {
            dataset: datasets[d].name.clone(),
            init: INITS[i],
            losses: buffer[r * slot + 1..(r + 1) * slot].chunks(seeds).map(<[f64]>::to_vec).collect(),
        })
        .collect())
}
