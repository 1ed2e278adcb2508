//! `scalenet-experiments compare`: scalenet's unnormalized networks against what a user would
//! otherwise train, on Fashion-MNIST (issue 28). This tool trains the `network!` declarations
//! (the full recipe, and `init: fan_in`), one ensemble per (architecture, init) holding every rate
//! and seed; `scripts/compare_torch.py` appends PyTorch's methods (BatchNorm, no normalization,
//! Fixup) to the same `results.jsonl`; every invocation rewrites the tables and the figure from
//! all the records whose protocol matches its flags. See `fixtures::compare` for the networks and
//! the protocol.

use fixtures::compare::{self, Arch, Outcome, Sweep};
use fixtures::stats::{mean_std, quantile};
use indicatif::{ProgressBar, ProgressStyle};
use scalenet::calculus::InitScheme;
use scalenet::data::ImageDataset;
use scalenet::plot::{self, Band};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Accuracy within this many points of a method's best counts as "as good" (the stable range).
const WITHIN: f64 = 0.01;

#[derive(clap::Args)]
pub struct CompareArgs {
    /// A folder with Fashion-MNIST's IDX files (`train-images-idx3-ubyte[.gz]`,
    /// `train-labels-idx1-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    data: PathBuf,
    /// Where results.jsonl, compare.md and compare.png go.
    #[arg(long)]
    out: PathBuf,
    /// Architectures, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["resnet", "vgg"])]
    arch: Vec<Arch>,
    /// scalenet inits, comma-separated: `geometric` (the full recipe) and `fan_in` (the baseline).
    #[arg(long, value_delimiter = ',', default_values = ["geometric", "fan_in"])]
    inits: Vec<String>,
    /// Learning rates of the minibatch mean loss, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [0.4, 0.2, 0.1, 0.05, 0.025, 0.0125])]
    lr_grid: Vec<f64>,
    /// Seeds per rate.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Passes over the training examples.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Examples per SGD step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Train on the first this many training examples (all by default).
    #[arg(long)]
    train_examples: Option<usize>,
    /// Measure on the first this many test examples (all by default).
    #[arg(long)]
    test_examples: Option<usize>,
    /// The output's std after the first minibatch (section 7; the DSL's default, 1, unless given;
    /// the paper's experiments use 0.05); 0 leaves it as initialized.
    #[arg(long, default_value_t = scalenet::calculus::DEFAULT_OUTPUT_STD)]
    output_std: f64,
    /// At most this many copies per ensemble (memory grows with it); a sweep larger than this
    /// runs as several ensembles.
    #[arg(long, default_value_t = 18)]
    max_copies: usize,
    /// Only rewrite the tables and the figure from results.jsonl (after the PyTorch script).
    #[arg(long)]
    report_only: bool,
    /// Smoke-run settings: 1 epoch of 256 examples, 64 test examples, 2 rates, 1 seed, minibatch 16.
    #[arg(long)]
    quick: bool,
    /// Where the networks train.
    #[arg(long, value_enum, default_value = "cpu")]
    device: fixtures::device::DeviceChoice,
}

/// One record of results.jsonl (written by this tool and by `scripts/compare_torch.py`).
#[derive(Debug, Clone)]
struct Record {
    method: String,
    arch: String,
    learning_rate: f64,
    seed: u64,
    test_accuracy: Option<f64>,
}

/// The protocol a record must match to be compared with this invocation's.
fn protocol(args: &CompareArgs, train: usize, test: usize) -> serde_json::Value {
    serde_json::json!({
        "epochs": args.epochs, "batch": args.batch_size, "train_examples": train, "test_examples": test,
    })
}

pub fn run(mut args: CompareArgs) -> Result<(), Error> {
    if args.quick {
        (args.epochs, args.batch_size, args.seeds) = (1, 16, 1);
        args.train_examples = Some(args.train_examples.unwrap_or(256).min(256));
        args.test_examples = Some(args.test_examples.unwrap_or(64).min(64));
        args.lr_grid = vec![0.1, 0.025];
    }
    if args.lr_grid.is_empty() || args.lr_grid.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        return Err(format!("--lr-grid {:?}: give positive, finite rates", args.lr_grid).into());
    }
    let inits = args
        .inits
        .iter()
        .map(|name| match InitScheme::from_name(name) {
            Some(init @ (InitScheme::Geometric | InitScheme::FanIn)) => Ok(init),
            _ => Err(format!("--inits {name}: the comparison declares `geometric` and `fan_in`")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let output_std = match args.output_std {
        0.0 => None,
        std if std.is_finite() && std > 0.0 => Some(std),
        std => return Err(format!("--output-std {std}: give a positive std, or 0 for no calibration").into()),
    };
    crate::input_folder("--data", &args.data)?;
    crate::output_folder("--out", &args.out)?;
    let started = Instant::now();
    let (train, test) = load(&args.data, args.train_examples, args.test_examples)?;
    let protocol = protocol(&args, train.len(), test.len());
    let log = args.out.join("results.jsonl");
    let mut records = read_records(&log, &protocol)?;
    if !args.report_only {
        let device = args.device.open()?;
        println!(
            "compare: {} training and {} test examples {:?}, {} epochs of minibatch {}, rates {:?}, {} seeds",
            train.len(),
            test.len(),
            train.image_shape(),
            args.epochs,
            args.batch_size,
            args.lr_grid,
            args.seeds
        );
        for &arch in &args.arch {
            for &init in &inits {
                let method = compare::method_name(init, output_std);
                let todo: Vec<(f64, u64)> = args
                    .lr_grid
                    .iter()
                    .flat_map(|&rate| (0..args.seeds).map(move |seed| (rate, seed)))
                    .filter(|&(rate, seed)| {
                        !records.iter().any(|r| {
                            r.method == method && r.arch == arch.name() && r.learning_rate == rate && r.seed == seed
                        })
                    })
                    .collect();
                for copies in todo.chunks(args.max_copies.max(1)) {
                    let sweep = Sweep {
                        arch,
                        init,
                        copies: copies.to_vec(),
                        epochs: args.epochs,
                        batch_size: args.batch_size,
                        output_std,
                    };
                    let progress = ProgressBar::new(0);
                    progress.set_style(ProgressStyle::with_template(
                        "{msg} {bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}]",
                    )?);
                    progress.set_message(format!("{} {method}, {} copies", arch.name(), copies.len()));
                    let outcomes = compare::run(&sweep, &train, &test, &device, |step, total| {
                        progress.set_length(total as u64);
                        progress.set_position(step as u64);
                    })?;
                    progress.finish_and_clear();
                    for outcome in outcomes {
                        let record = append(&log, &protocol, &method, arch, &outcome)?;
                        println!(
                            "{} {method} lr {} seed {}: test accuracy {}, last-epoch loss {:.4}",
                            arch.name(),
                            outcome.learning_rate,
                            outcome.seed,
                            outcome.test_accuracy.map_or("diverged".into(), |a| format!("{:.2}%", 100.0 * a)),
                            outcome.final_loss
                        );
                        records.push(record);
                    }
                }
            }
        }
    }
    report(&args, &protocol, &records, started.elapsed().as_secs_f64())
}

/// The first `train_examples` training and `test_examples` test examples, standardized with the
/// training examples' pixel mean and std.
fn load(dir: &Path, train: Option<usize>, test: Option<usize>) -> Result<(ImageDataset, ImageDataset), Error> {
    let find = |stem: &str| -> Result<PathBuf, Error> {
        fixtures::alexnet::idx_file(dir, stem).ok_or_else(|| format!("{} has no {stem}[.gz]; the comparison reads Fashion-MNIST's four IDX files (Debian: apt install dataset-fashion-mnist)", dir.display()).into())
    };
    let first = |data: ImageDataset, count: Option<usize>| -> Result<ImageDataset, Error> {
        Ok(match count {
            Some(count) => data.split(count)?.0,
            None => data,
        })
    };
    let train =
        first(ImageDataset::from_idx(find("train-images-idx3-ubyte")?, find("train-labels-idx1-ubyte")?)?, train)?;
    let test = first(ImageDataset::from_idx(find("t10k-images-idx3-ubyte")?, find("t10k-labels-idx1-ubyte")?)?, test)?;
    if train.is_empty() || test.is_empty() {
        return Err(format!("{}: no training or no test examples to compare on", dir.display()).into());
    }
    let (mean, std) = train.pixel_moments()?;
    Ok((train.standardized_with(mean, std)?, test.standardized_with(mean, std)?))
}

fn append(
    log: &Path,
    protocol: &serde_json::Value,
    method: &str,
    arch: Arch,
    outcome: &Outcome,
) -> Result<Record, Error> {
    let mut line = protocol.clone();
    let fields = serde_json::json!({
        "method": method, "arch": arch.name(), "lr": outcome.learning_rate, "seed": outcome.seed,
        "test_accuracy": outcome.test_accuracy, "final_loss": if outcome.final_loss.is_finite() { Some(outcome.final_loss) } else { None },
    });
    for (key, value) in fields.as_object().expect("an object") {
        line[key] = value.clone();
    }
    fixtures::table2::append_line(log, &line.to_string())?;
    Ok(Record {
        method: method.into(),
        arch: arch.name().into(),
        learning_rate: outcome.learning_rate,
        seed: outcome.seed,
        test_accuracy: outcome.test_accuracy,
    })
}

/// The records of `log` run under `protocol` (others are kept in the file, not compared).
fn read_records(log: &Path, protocol: &serde_json::Value) -> Result<Vec<Record>, Error> {
    let text = match std::fs::read_to_string(log) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", log.display()).into()),
    };
    let mut records = Vec::new();
    for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            format!("{}:{}: not a JSON record ({e}); remove the line to go on", log.display(), number + 1)
        })?;
        if protocol.as_object().expect("an object").iter().any(|(key, expected)| &value[key] != expected) {
            continue;
        }
        let field = |key: &str| format!("{}:{}: the record has no `{key}`", log.display(), number + 1);
        records.push(Record {
            method: value["method"].as_str().ok_or_else(|| field("method"))?.to_string(),
            arch: value["arch"].as_str().ok_or_else(|| field("arch"))?.to_string(),
            learning_rate: value["lr"].as_f64().ok_or_else(|| field("lr"))?,
            seed: value["seed"].as_u64().ok_or_else(|| field("seed"))?,
            test_accuracy: value["test_accuracy"].as_f64(),
        });
    }
    Ok(records)
}

/// One method's sweep on one architecture, summarized.
struct Summary {
    best_rate: f64,
    /// Accuracies at the best rate, one per seed (diverged seeds count as 0).
    at_best: Vec<f64>,
    /// The rates whose mean accuracy is within [`WITHIN`] of the best's.
    stable: Vec<f64>,
    rates: usize,
    diverged: usize,
}

/// Per method: mean test accuracy per rate (a diverged run counts as 0, what a user gets from
/// it), the best rate, and the rates within [`WITHIN`] of it.
fn summarize(records: &[&Record]) -> Option<Summary> {
    let mut by_rate: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for record in records {
        by_rate.entry(record.learning_rate.to_bits()).or_default().push(record.test_accuracy.unwrap_or(0.0));
    }
    let means: Vec<(f64, f64)> =
        by_rate.iter().map(|(&bits, values)| (f64::from_bits(bits), mean_std(values).0)).collect();
    let &(best_rate, best) = means.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
    let mut stable: Vec<f64> = means.iter().filter(|(_, m)| *m >= best - WITHIN).map(|(r, _)| *r).collect();
    stable.sort_by(f64::total_cmp);
    Some(Summary {
        best_rate,
        at_best: by_rate[&best_rate.to_bits()].clone(),
        stable,
        rates: means.len(),
        diverged: records.iter().filter(|r| r.test_accuracy.is_none()).count(),
    })
}

fn report(args: &CompareArgs, protocol: &serde_json::Value, records: &[Record], seconds: f64) -> Result<(), Error> {
    let mut markdown = format!(
        "Fashion-MNIST, {} training and {} test examples, {} epochs of minibatch {}, plain SGD at a constant rate; \
         test accuracy at each method's best rate (mean ± std over seeds; a diverged run counts as 0), and the \
         rates whose mean is within {} points of that best. Records: {} in results.jsonl under this protocol.\n",
        protocol["train_examples"],
        protocol["test_examples"],
        args.epochs,
        args.batch_size,
        100.0 * WITHIN,
        records.len()
    );
    let mut panels = Vec::new();
    let archs: Vec<String> = {
        let mut names: Vec<String> = records.iter().map(|r| r.arch.clone()).collect();
        names.sort();
        names.dedup();
        names
    };
    for arch in &archs {
        writeln!(markdown, "\n### {arch}\n")?;
        writeln!(markdown, "| method | best rate | test accuracy | seeds | rates within 1% | of | diverged runs |")?;
        writeln!(markdown, "|---|---|---|---|---|---|---|")?;
        let mut methods: Vec<String> = records.iter().filter(|r| &r.arch == arch).map(|r| r.method.clone()).collect();
        methods.sort();
        methods.dedup();
        let mut bands = Vec::new();
        for method in &methods {
            let mine: Vec<&Record> = records.iter().filter(|r| &r.arch == arch && &r.method == method).collect();
            let Some(summary) = summarize(&mine) else { continue };
            let (mean, std) = mean_std(&summary.at_best);
            let stable = match (summary.stable.first(), summary.stable.last()) {
                (Some(lo), Some(hi)) if lo != hi => format!("{} ({lo}-{hi})", summary.stable.len()),
                _ => format!("{} ({})", summary.stable.len(), summary.best_rate),
            };
            writeln!(
                markdown,
                "| {method} | {} | {:.2}% ± {:.2} | {} | {stable} | {} | {} |",
                summary.best_rate,
                100.0 * mean,
                100.0 * std,
                summary.at_best.len(),
                summary.rates,
                summary.diverged
            )?;
            let mut by_rate: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for record in &mine {
                if let Some(accuracy) = record.test_accuracy {
                    by_rate.entry(record.learning_rate.to_bits()).or_default().push(100.0 * accuracy);
                }
            }
            let points = by_rate
                .iter()
                .map(|(&bits, v)| (f64::from_bits(bits), quantile(v, 0.5), quantile(v, 0.25), quantile(v, 0.75)))
                .collect();
            bands.push(Band { label: method.clone(), points });
        }
        panels.push((arch.clone(), bands));
    }
    if !args.report_only {
        writeln!(markdown, "\n{seconds:.0} s for the runs of this invocation.")?;
    }
    crate::write_atomically(&args.out.join("compare.md"), &markdown)?;
    if panels.iter().any(|(_, bands)| bands.iter().any(|b| !b.points.is_empty())) {
        let title = format!(
            "Fashion-MNIST test accuracy (%) against the learning rate, minibatch {}, {} epochs: median and 25-75% over seeds",
            args.batch_size, args.epochs
        );
        plot::sweep_panels(&args.out.join("compare.png"), &title, "learning rate", "test accuracy (%)", &panels)?;
    }
    println!("{markdown}");
    Ok(())
}
