//! `scalenet-experiments alexnet`: the strided AlexNet of section 10 (Fig. 4) under the four
//! inits, a learning-rate sweep and several seeds, on CIFAR-10 binary batches or IDX files
//! (Fashion-MNIST). See `fixtures::alexnet` for the network and the protocol.

use fixtures::alexnet::{self, Protocol, Run, Size};
use fixtures::stats::quantile;
use fixtures::table2::INITS;
use indicatif::{ProgressBar, ProgressStyle};
use scalenet::calculus::InitScheme;
use scalenet::plot::{self, Band};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(clap::Args)]
pub struct AlexNetArgs {
    /// A folder with CIFAR-10 binary batches (`data_batch_*.bin`) or IDX files
    /// (`train-images-idx3-ubyte[.gz]` and `train-labels-idx1-ubyte[.gz]`, Fashion-MNIST).
    #[arg(long)]
    data: PathBuf,
    /// Where results.jsonl, alexnet.md and fig4.png go.
    #[arg(long)]
    out: PathBuf,
    /// `full` (AlexNet's widths) or `small` (a quarter of the channels, 256-unit linear layers).
    #[arg(long, default_value = "full", value_parser = ["full", "small"])]
    size: String,
    /// SGD steps per run.
    #[arg(long, default_value_t = 5000)]
    steps: usize,
    /// Examples per SGD step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Learning rates (of the minibatch mean loss), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [0.08, 0.04, 0.02, 0.01, 0.005])]
    lr_grid: Vec<f64>,
    /// Training runs (seeds) per init and rate.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// Smoothing window over minibatch losses (the paper: 400 steps).
    #[arg(long, default_value_t = 400)]
    window: usize,
    /// Use at most this many training examples (a seeded subset).
    #[arg(long)]
    max_examples: Option<usize>,
    /// Smoke-run settings: small network, 2 rates, 1 seed, 20 steps of 16, 256 examples.
    #[arg(long)]
    quick: bool,
    /// Where the networks train.
    #[arg(long, value_enum, default_value = "cpu")]
    device: fixtures::device::DeviceChoice,
}

fn key(args: &AlexNetArgs, protocol: &Protocol) -> String {
    format!(
        "size={:?} steps={} batch={} max={:?} data={}",
        protocol.size,
        protocol.steps,
        protocol.batch_size,
        args.max_examples,
        args.data.display()
    )
}

pub fn run(mut args: AlexNetArgs) -> Result<(), Error> {
    if args.quick {
        (args.size, args.steps, args.batch_size, args.seeds, args.window) = ("small".into(), 20, 16, 1, 5);
        args.lr_grid = vec![0.02, 0.005];
        args.max_examples = Some(args.max_examples.unwrap_or(256).min(256));
    }
    crate::input_folder("--data", &args.data)?;
    crate::output_folder("--out", &args.out)?;
    let device = args.device.open()?;
    let started = Instant::now();
    let mut data = alexnet::prepare(&alexnet::load(&args.data)?)?;
    if let Some(max) = args.max_examples {
        data = data.shuffled(0)?.split(max)?.0;
    }
    let protocol = Protocol {
        size: if args.size == "small" { Size::Small } else { Size::Full },
        steps: args.steps,
        batch_size: args.batch_size,
        output_std: 0.05,
    };
    let key = key(&args, &protocol);
    let log = args.out.join("results.jsonl");
    let mut done: Vec<(Run, Vec<f64>)> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| from_json_line(line, &key))
        .collect();
    let runs: Vec<Run> = INITS
        .iter()
        .flat_map(|&init| {
            args.lr_grid
                .iter()
                .flat_map(move |&learning_rate| (0..args.seeds).map(move |seed| Run { init, learning_rate, seed }))
        })
        .filter(|run| !done.iter().any(|(d, _)| same(d, run)))
        .collect();
    println!(
        "alexnet ({:?}): {} examples {:?}, {} runs to do ({} already in {}), output std 0.05 after the first minibatch",
        protocol.size,
        data.len(),
        data.image_shape(),
        runs.len(),
        done.len(),
        log.display()
    );
    let progress = ProgressBar::new((runs.len() * protocol.steps) as u64);
    progress
        .set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}")?);
    for run in runs {
        progress.set_message(format!("{} lr {} seed {}", run.init.name(), run.learning_rate, run.seed));
        let losses = alexnet::train(&data, run, &protocol, &device)?;
        progress.inc(protocol.steps as u64);
        let line = serde_json::json!({
            "settings": key, "init": run.init.name(), "lr": run.learning_rate, "seed": run.seed, "losses": losses
        });
        fixtures::table2::append_line(&log, &line.to_string())?;
        done.push((run, losses));
    }
    progress.finish_and_clear();
    report(&args, &done, started.elapsed().as_secs_f64())
}

fn same(a: &Run, b: &Run) -> bool {
    a.init == b.init && a.learning_rate == b.learning_rate && a.seed == b.seed
}

fn from_json_line(line: &str, key: &str) -> Option<(Run, Vec<f64>)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value["settings"] != key {
        return None;
    }
    let losses = value["losses"].as_array()?.iter().map(|l| l.as_f64().unwrap_or(f64::INFINITY)).collect();
    let run = Run {
        init: InitScheme::from_name(value["init"].as_str()?)?,
        learning_rate: value["lr"].as_f64()?,
        seed: value["seed"].as_u64()?,
    };
    Some((run, losses))
}

/// Per init: the best rate by the median over seeds of the final smoothed loss; the table, and
/// Fig. 4 (median and IQR over seeds of the smoothed loss at each init's best rate).
fn report(args: &AlexNetArgs, done: &[(Run, Vec<f64>)], seconds: f64) -> Result<(), Error> {
    let mut markdown = format!(
        "Strided AlexNet ({}), {} steps of minibatch {}, rates {:?}, {} seeds, smoothing window {}; data {}.\n\n",
        args.size,
        args.steps,
        args.batch_size,
        args.lr_grid,
        args.seeds,
        args.window,
        args.data.display()
    );
    writeln!(markdown, "| init | best rate | final smoothed loss: median | 25% | 75% | at grid edge |")?;
    writeln!(markdown, "|---|---|---|---|---|---|")?;
    let mut bands = Vec::new();
    for init in INITS {
        let mut best: Option<(f64, f64, Vec<Vec<f64>>)> = None;
        for &rate in &args.lr_grid {
            let curves: Vec<Vec<f64>> = done
                .iter()
                .filter(|(run, _)| run.init == init && run.learning_rate == rate)
                .map(|(_, losses)| alexnet::smoothed(losses, args.window))
                .collect();
            if curves.is_empty() {
                continue;
            }
            let finals: Vec<f64> = curves.iter().map(|c| *c.last().unwrap_or(&f64::INFINITY)).collect();
            let median = quantile(&finals, 0.5);
            let median = if median.is_nan() { f64::INFINITY } else { median };
            if best.as_ref().is_none_or(|b| median < b.1) {
                best = Some((rate, median, curves));
            }
        }
        let Some((rate, _, curves)) = best else { continue };
        let finals: Vec<f64> = curves.iter().map(|c| *c.last().unwrap_or(&f64::INFINITY)).collect();
        let edge = rate == args.lr_grid[0] || rate == *args.lr_grid.last().expect("a rate");
        writeln!(
            markdown,
            "| {} | {rate} | {:.4} | {:.4} | {:.4} | {} |",
            init.name(),
            quantile(&finals, 0.5),
            quantile(&finals, 0.25),
            quantile(&finals, 0.75),
            if edge { "yes" } else { "no" }
        )?;
        let steps = curves.iter().map(Vec::len).min().unwrap_or(0);
        let stride = (steps / 200).max(1);
        let points = (0..steps)
            .step_by(stride)
            .map(|s| {
                let at: Vec<f64> = curves.iter().map(|c| c[s]).collect();
                ((s + 1) as f64, quantile(&at, 0.5), quantile(&at, 0.25), quantile(&at, 0.75))
            })
            .collect();
        bands.push(Band { label: format!("{} (lr {rate})", init.name()), points });
    }
    writeln!(markdown, "\n{:.0} s for the runs of this invocation.", seconds)?;
    crate::write_atomically(&args.out.join("alexnet.md"), &markdown)?;
    let title =
        format!("Fig. 4: strided AlexNet ({}), smoothed minibatch loss, median and 25-75% over seeds", args.size);
    plot::training_curves(&args.out.join("fig4.png"), &title, "step", "training loss", &[(String::new(), bands)])?;
    println!("{markdown}");
    Ok(())
}
