//! Measures a network at initialization against the calculus and reproduces the paper's figures:
//!
//! - the table: per step, measured and predicted `E[x^2]`, `E[dx^2]`, scaling factor, gamma
//!   (Theorem 1), extrinsic gamma (eq. 2) and bias scaling (eq. 7), averaged over inits (text, JSON);
//! - Fig. 1: eq. (2) over the measured `E[(G_l r)^2]` of every diagonal Gauss-Newton block, over
//!   sampled setups (widths, seeds): histogram PNG, CSV;
//! - Fig. 2: the mean squared singular value of every Gauss-Newton block under geometric, fan_in,
//!   fan_out and arithmetic init: one PNG with four panels on one colour scale, CSV;
//! - the coordinate check: measured moments and gammas against width: PNG, CSV.
//!
//! ```text
//! cargo run --release --example diagnose -- lenet --out docs/diagnose/lenet
//! cargo run --release --example diagnose -- mlp --out docs/diagnose/mlp
//! ```

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use scalenet::diagnostics::{quartiles, CoordinateCheck, Diagnosis, GaussNewton};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use fixtures::networks;
use fixtures::variants::{self, Variant};

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    /// The strided LeNet of the paper's Fig. 1 and Fig. 2 (3x32x32 input).
    Lenet,
    /// The section 9 MLP 784-384-64-10.
    Mlp,
    /// LeNet with 2x2 average pooling (Fig. 2 adds geometric planned with the paper's model).
    PooledLenet,
    /// The small pre-activation ResNet with average-pooling shortcuts and head: the table only.
    PooledResnet,
    /// The same ResNet with centred weight rows (`centred_weights: true`): the table only.
    PooledResnetCentred,
    /// Depthwise, pointwise and grouped convolutions (8x8x8 input): the table only.
    Grouped,
    /// The same network with every convolution in one group: the table only.
    Ungrouped,
    /// The comparison's pre-activation ResNet for 1x28x28 images (fixtures::compare): the table only.
    CompareResnet,
    /// The comparison's VGG-style network for 1x28x28 images: the table only.
    CompareVgg,
    /// The comparison's ResNet with a global-average-pool head: the table only.
    CompareResnetPooledHead,
    /// The same with a 5x5 stem: the table only.
    CompareResnetPooledHead5x5,
    /// The same on 3x28x28 images: the table only.
    CompareResnetPooledHeadRgb,
    /// The same on 1x28x28 images with centred weight rows: the table only.
    CompareResnetPooledHeadCentred,
}

#[derive(Parser)]
#[command(about = "Measure a network at initialization against the scaling calculus; reproduce Fig. 1 and Fig. 2")]
struct Args {
    #[arg(value_enum)]
    network: Which,
    #[arg(long, default_value = "out/diagnose")]
    out: PathBuf,
    /// Table: initializations pooled (narrow networks vary most from one init to the next).
    #[arg(long, default_value_t = 128)]
    seeds: u64,
    /// Table: samples per initialization.
    #[arg(long, default_value_t = 32)]
    samples: usize,
    /// Fig. 1: sampled setups (width and seed).
    #[arg(long, default_value_t = 100)]
    setups: usize,
    /// Fig. 1: samples per setup.
    #[arg(long, default_value_t = 24)]
    setup_batch: usize,
    /// Fig. 2: initializations averaged per init scheme.
    #[arg(long, default_value_t = 4)]
    block_seeds: u64,
    /// Fig. 2: samples per initialization.
    #[arg(long, default_value_t = 64)]
    block_batch: usize,
    /// Coordinate check: initializations averaged at the widest width (narrower widths get more).
    #[arg(long, default_value_t = 4)]
    sweep_seeds: u64,
    /// Coordinate check: samples per initialization.
    #[arg(long, default_value_t = 32)]
    sweep_batch: usize,
    /// Only the table, no figures.
    #[arg(long)]
    table_only: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Runs `job(0..count)` on `threads` workers with a progress bar; results in job order.
fn parallel<T: Send>(
    message: &str,
    count: usize,
    threads: usize,
    job: impl Fn(usize) -> candle_core::Result<T> + Sync,
) -> candle_core::Result<Vec<T>> {
    let progress = ProgressBar::new(count as u64).with_message(message.to_string());
    progress
        .set_style(ProgressStyle::with_template("{msg:<28} [{bar:30}] {pos}/{len} {elapsed}").expect("valid template"));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<candle_core::Result<T>>>> = Mutex::new((0..count).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1).min(count.max(1)) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    break;
                }
                let result = job(index);
                results.lock().expect("no worker panics holding the lock")[index] = Some(result);
                progress.inc(1);
            });
        }
    });
    progress.finish();
    results.into_inner().expect("workers done").into_iter().map(|r| r.expect("every job ran")).collect()
}

/// Writes `contents` to `path` atomically: a temporary file in the same folder, then a rename.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

fn table(variant: &Variant, args: &Args, threads: usize) -> candle_core::Result<Diagnosis> {
    let all = parallel("table", args.seeds as usize, threads, |i| (variant.measure)(i as u64, args.samples))?;
    Ok(Diagnosis::mean(&all).expect("at least one seed"))
}

/// Fig. 1: eq. (2) / E[(G_l r)^2] for every layer of every setup. Returns the summary lines.
fn figure_1(variants: &[Variant], args: &Args, threads: usize, summary: &mut String) -> Result<(), Error> {
    let setups = parallel("Fig. 1 setups", args.setups, threads, |i| {
        let variant = &variants[i % variants.len()];
        (variant.gauss_newton)(i as u64, args.setup_batch)
    })?;
    let mut csv = String::from("setup,variant,seed,layer,eq2_scaling,gauss_newton,ratio\n");
    let mut all = Vec::new();
    let mut by_layer: Vec<(String, Vec<f64>)> = Vec::new();
    for (i, gn) in setups.iter().enumerate() {
        let variant = &variants[i % variants.len()];
        for (l, ratio) in gn.scaling_ratios().into_iter().enumerate() {
            let (Some(ratio), Some(scaling)) = (ratio, gn.scaling[l]) else { continue };
            let layer = gn.layers[l].trim_end_matches(".weight");
            writeln!(csv, "{i},{},{i},{layer},{scaling:e},{:e},{ratio}", variant.label, gn.blocks[l][l])?;
            all.push(ratio);
            match by_layer.iter_mut().find(|(name, _)| name == layer) {
                Some((_, values)) => values.push(ratio),
                None => by_layer.push((layer.to_string(), vec![ratio])),
            }
        }
    }
    let out = &args.out;
    write_atomically(&out.join("fig1_ratios.csv"), &csv)?;
    let [q1, median, q3] = quartiles(&all).ok_or("no Fig. 1 ratios")?;
    writeln!(
        summary,
        "Fig. 1: eq. (2) / E[(G_l r)^2] over {} setups x {} layers ({} samples each): median {median:.3}, quartiles {q1:.3} .. {q3:.3}",
        args.setups,
        by_layer.len(),
        args.setup_batch
    )?;
    for (layer, values) in &by_layer {
        let [a, m, b] = quartiles(values).expect("non-empty");
        writeln!(summary, "  {layer:<6} median {m:.3}, quartiles {a:.3} .. {b:.3}")?;
    }
    scalenet::plot::ratio_histogram(
        &out.join("fig1.png"),
        &format!("eq. (2) / E[(G_l r)²] per layer, {} setups (widths, seeds)", args.setups),
        "ratio of theoretical scaling to measured",
        &all,
        40,
    )?;
    Ok(())
}

/// Fig. 2: block heat maps under the four inits.
fn figure_2(variants: &[Variant], args: &Args, threads: usize, summary: &mut String) -> Result<(), Error> {
    let seeds = args.block_seeds as usize;
    let runs = parallel("Fig. 2 blocks", variants.len() * seeds, threads, |i| {
        (variants[i / seeds].gauss_newton)((i % seeds) as u64, args.block_batch)
    })?;
    let means: Vec<GaussNewton> =
        runs.chunks(seeds).map(|chunk| GaussNewton::mean(chunk).expect("at least one seed")).collect();
    let mut csv = String::new();
    writeln!(
        summary,
        "Fig. 2: diagonal max/min of the Gauss-Newton blocks ({seeds} inits x {} samples):",
        args.block_batch
    )?;
    for (variant, gn) in variants.iter().zip(&means) {
        for line in gn.to_csv().lines().skip(usize::from(!csv.is_empty())) {
            let prefix = if line.starts_with("layer,") { "init" } else { variant.label };
            writeln!(csv, "{prefix},{line}")?;
        }
        let diagonal: Vec<String> = gn.diagonal().iter().map(|d| format!("{d:.3e}")).collect();
        writeln!(summary, "  {:<10} {:>6.2}   diagonal {}", variant.label, gn.diagonal_spread(), diagonal.join(" "))?;
    }
    write_atomically(&args.out.join("fig2_blocks.csv"), &csv)?;
    {
        let panels: Vec<(&str, &GaussNewton)> = variants.iter().map(|v| v.label).zip(&means).collect();
        scalenet::plot::gauss_newton_heat_maps(&args.out.join("fig2.png"), &panels)?;
    }
    Ok(())
}

/// The coordinate check over the width variants.
fn coordinate_check(
    network: &str,
    variants: &[Variant],
    args: &Args,
    threads: usize,
    summary: &mut String,
) -> Result<(), Error> {
    // Narrow networks vary most between initializations and cost least: each width gets
    // initializations in proportion to (widest / width)^2, at most 32 times the widest's.
    let widest = variants.iter().map(|v| v.width).max().unwrap_or(1);
    let seeds_of = |v: &Variant| args.sweep_seeds as usize * (widest * widest / (v.width * v.width)).clamp(1, 32);
    let jobs: Vec<(usize, u64)> =
        variants.iter().enumerate().flat_map(|(i, v)| (0..seeds_of(v) as u64).map(move |seed| (i, seed))).collect();
    let runs = parallel("coordinate check", jobs.len(), threads, |j| {
        let (variant, seed) = jobs[j];
        (variants[variant].measure)(seed, args.sweep_batch)
    })?;
    let mut runs = runs.into_iter();
    let sweep = variants
        .iter()
        .map(|v| {
            let chunk: Vec<Diagnosis> = runs.by_ref().take(seeds_of(v)).collect();
            (v.width, Diagnosis::mean(&chunk).expect("at least one seed"))
        })
        .collect();
    let check = CoordinateCheck::new(network, sweep)?;
    write_atomically(&args.out.join("coordinate_check.csv"), &check.to_csv())?;
    writeln!(
        summary,
        "Coordinate check at widths {:?} ({:?} inits x {} samples): gamma max/min over all layers and widths {:.2}",
        check.widths,
        variants.iter().map(seeds_of).collect::<Vec<_>>(),
        args.sweep_batch,
        check.gamma_spread()
    )?;
    for (layer, drift) in check.gamma_drift() {
        writeln!(summary, "  {layer:<6} gamma max/min across widths {drift:.2}")?;
    }
    scalenet::plot::coordinate_check(&args.out.join("coordinate_check.png"), &check)?;
    Ok(())
}

fn main() -> Result<(), Error> {
    scalenet::ops::park_idle_candle_threads();
    let args = Args::parse();
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    std::fs::create_dir_all(&args.out)?;
    let start = std::time::Instant::now();
    let mut summary = format!("command: {}\n", std::env::args().collect::<Vec<_>>().join(" "));
    let (network, base, widths, inits) = match args.network {
        Which::Lenet => (
            "StridedLeNet",
            Variant::of::<networks::StridedLeNet>("x1", 6),
            variants::lenet_widths(),
            variants::lenet_inits(),
        ),
        Which::Mlp => ("Mlp", Variant::of::<networks::Mlp>("64", 64), variants::mlp_widths(), variants::mlp_inits()),
        Which::PooledLenet => (
            "PooledLeNet",
            Variant::of::<networks::PooledLeNet>("x1", 6),
            variants::pooled_lenet_widths(),
            variants::pooled_lenet_inits(),
        ),
        Which::PooledResnet => ("PooledResNet", Variant::of::<networks::PooledResNet>("x1", 8), vec![], vec![]),
        Which::PooledResnetCentred => {
            ("PooledResNetCentred", Variant::of::<networks::PooledResNetCentred>("x1", 8), vec![], vec![])
        }
        Which::Grouped => ("GroupedConvNet", Variant::of::<networks::GroupedConvNet>("x1", 8), vec![], vec![]),
        Which::Ungrouped => ("UngroupedConvNet", Variant::of::<networks::UngroupedConvNet>("x1", 8), vec![], vec![]),
        Which::CompareResnet => {
            ("CompareResNet", Variant::of::<fixtures::compare::CompareResNet>("x1", 8), vec![], vec![])
        }
        Which::CompareVgg => ("CompareVgg", Variant::of::<fixtures::compare::CompareVgg>("x1", 8), vec![], vec![]),
        Which::CompareResnetPooledHead => (
            "CompareResNetPooledHead",
            Variant::of::<fixtures::compare::CompareResNetPooledHead>("x1", 8),
            vec![],
            vec![],
        ),
        Which::CompareResnetPooledHead5x5 => (
            "CompareResNetPooledHead5x5",
            Variant::of::<fixtures::compare::CompareResNetPooledHead5x5>("x1", 8),
            vec![],
            vec![],
        ),
        Which::CompareResnetPooledHeadRgb => (
            "CompareResNetPooledHeadRgb",
            Variant::of::<fixtures::compare::CompareResNetPooledHeadRgb>("x1", 8),
            vec![],
            vec![],
        ),
        Which::CompareResnetPooledHeadCentred => (
            "CompareResNetPooledHeadCentred",
            Variant::of::<fixtures::compare::CompareResNetPooledHeadCentred>("x1", 8),
            vec![],
            vec![],
        ),
    };
    let diagnosis = table(&base, &args, threads)?;
    println!("{diagnosis}");
    let name = network.to_lowercase();
    write_atomically(&args.out.join(format!("{name}.txt")), &diagnosis.to_string())?;
    write_atomically(&args.out.join(format!("{name}.json")), &diagnosis.to_json())?;
    let gamma_ratios: Vec<String> = diagnosis
        .steps
        .iter()
        .filter_map(|s| {
            let gamma = s.gamma?;
            let error = gamma.ratio_standard_error().map_or(String::new(), |e| format!("±{e:.3}"));
            Some(format!("{} {:.3}{error}", s.layer, gamma.ratio()))
        })
        .collect();
    writeln!(
        summary,
        "Table ({} inits x {} samples): gamma measured/predicted (± standard error): {}",
        args.seeds,
        args.samples,
        gamma_ratios.join(", ")
    )?;
    if !widths.is_empty() && !args.table_only {
        // Fig. 1 samples the three smaller widths: the widest costs as much as the rest together.
        let mut timed = |name: &str, run: &mut dyn FnMut(&mut String) -> Result<(), Error>| -> Result<(), Error> {
            let section = std::time::Instant::now();
            run(&mut summary)?;
            writeln!(summary, "  ({name}: {:.1} s)", section.elapsed().as_secs_f64())?;
            Ok(())
        };
        timed("Fig. 1", &mut |s| figure_1(&widths[..3], &args, threads, s))?;
        timed("Fig. 2", &mut |s| figure_2(&inits, &args, threads, s))?;
        timed("coordinate check", &mut |s| coordinate_check(network, &widths, &args, threads, s))?;
    }
    writeln!(summary, "total {:.1} s on {threads} thread(s)", start.elapsed().as_secs_f64())?;
    print!("{summary}");
    write_atomically(&args.out.join("summary.txt"), &summary)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
