//! `scalenet-experiments triangle`: the triangle reparameterization (Milkert, Hyde & Laine 2025)
//! measured: exact pieces at initialization, and fitting `x^3` and `x^11` from He init against the
//! reparameterization with pretraining (see `fixtures::triangle`).

use fixtures::mirrored::{mean_std, quantile};
use fixtures::triangle::*;
use scalenet::plot::{self, FittedCurve};
use scalenet::Network;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(clap::Args)]
pub struct TriangleArgs {
    /// Where report.md and the figures go.
    #[arg(long)]
    out: PathBuf,
    /// Runs per (target, method).
    #[arg(long, default_value_t = 30)]
    runs: u64,
    /// Full-batch Adam steps through the parameterization (He runs get these steps too).
    #[arg(long, default_value_t = 1000)]
    pretrain_steps: usize,
    /// Full-batch Adam steps on the raw weights after release.
    #[arg(long, default_value_t = 2000)]
    raw_steps: usize,
    /// Adam's learning rate for both phases.
    #[arg(long, default_value_t = 1e-3)]
    learning_rate: f64,
    /// Smoke-run settings: 3 runs, 100 + 100 steps.
    #[arg(long)]
    quick: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(mut args: TriangleArgs) -> Result<(), Error> {
    if args.quick {
        (args.runs, args.pretrain_steps, args.raw_steps) = (3, 100, 100);
    }
    crate::output_folder("--out", &args.out)?;
    let started = Instant::now();
    let mut report = String::from("# The triangle reparameterization, measured\n\n");
    pieces(&mut report)?;
    gammas(&mut report)?;
    fits(&args, &mut report)?;
    writeln!(report, "\nTotal time: {:.0} s.", started.elapsed().as_secs_f64())?;
    crate::write_atomically(&args.out.join("report.md"), &report)?;
    println!("{report}");
    Ok(())
}

fn pieces(report: &mut String) -> Result<(), Error> {
    let started = Instant::now();
    let inits: u64 = 100;
    writeln!(
        report,
        "## Linear pieces on [0, 1] at initialization\n\nWidth 4, `d` hidden layers, counted exactly by \
         `scalenet::regions::linear_regions` (breakpoints walked, not sampled). Triangle: random peaks \
         `a_i ~ U(0.25, 0.75)`, 10 seeds. Fan-in: the same network under `init: fan_in` (zero biases), and under \
         PyTorch's default `nn.Linear` init (weights and biases uniform in ±1/sqrt(fan_in)), {inits} inits each.\n"
    )?;
    writeln!(report, "| d | 2^d | triangle: min | max | fan_in: mean | max | PyTorch default: mean | max |")?;
    writeln!(report, "|---|---|---|---|---|---|---|---|")?;
    fn row<N: Network>(depth: u32, inits: u64, report: &mut String) -> Result<(), Error> {
        let triangle: Vec<usize> =
            (0..10).map(|s| pieces_at_init::<N>(s, true).map(|p| p.count())).collect::<Result<_, _>>()?;
        let fan_in: Vec<usize> =
            (0..inits).map(|s| pieces_at_init::<N>(s, false).map(|p| p.count())).collect::<Result<_, _>>()?;
        let torch: Vec<usize> =
            (0..inits).map(|s| pieces_at_torch_default_init::<N>(s).map(|p| p.count())).collect::<Result<_, _>>()?;
        let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
        let max = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
        let min = |v: &[usize]| v.iter().copied().min().unwrap_or(0);
        writeln!(
            report,
            "| {depth} | {} | {} | {} | {:.2} | {} | {:.2} | {} |",
            1usize << depth,
            min(&triangle),
            max(&triangle),
            mean(&fan_in),
            max(&fan_in),
            mean(&torch),
            max(&torch)
        )?;
        Ok(())
    }
    row::<Triangle3>(3, inits, report)?;
    row::<Triangle4>(4, inits, report)?;
    row::<Triangle5>(5, inits, report)?;
    row::<Triangle6>(6, inits, report)?;
    row::<Triangle7>(7, inits, report)?;
    row::<Triangle8>(8, inits, report)?;
    row::<Triangle9>(9, inits, report)?;
    row::<Triangle10>(10, inits, report)?;
    writeln!(report, "\nTime: {:.1} s.\n", started.elapsed().as_secs_f64())?;
    Ok(())
}

/// What the calculus says about the triangle weights: measured gamma per layer at
/// initialization on the 500-point grid (16 seeds), against He init and the plan's prediction
/// (which assumes centred unit-variance inputs, not points of [0, 1]).
fn gammas(report: &mut String) -> Result<(), Error> {
    use candle_core::{DType, Device, Module};
    use candle_nn::VarMap;
    use scalenet::diagnostics::weight_to_gradient_ratios;
    let (xs, _) = power_data(1, 500)?;
    let plan = Triangle5::plan();
    writeln!(
        report,
        "## The calculus on triangle weights\n\nMeasured γ = E[dW²]/E[W²] per layer of `Triangle5` at initialization \
         (inputs: the 500 points of [0, 1]; backward signal N(0, 1) per output, batch-size-1 semantics), mean over \
         16 seeds, under He init and under random-peak triangle weights; the plan's γ is for its own (He) init with \
         centred unit-variance inputs, which points of [0, 1] are not. The triangle weights are set by the \
         construction, not by a variance rule, and the calculus does not balance them.\n"
    )?;
    writeln!(report, "| layer | plan γ (He, centred inputs) | measured γ, He | measured γ, triangle |")?;
    writeln!(report, "|---|---|---|---|")?;
    let mut sums: Vec<[f64; 2]> = vec![[0.0; 2]; plan.weight_steps().count()];
    let seeds = 16;
    for seed in 0..seeds {
        for (column, triangle) in [false, true].into_iter().enumerate() {
            let varmap = VarMap::new();
            let net = Triangle5::new_seeded(&varmap, DType::F64, &Device::Cpu, seed)?;
            if triangle {
                scalenet::triangle::Triangle::new(5, seed, &Device::Cpu)?.release::<Triangle5>(&varmap)?;
            }
            let ratios = weight_to_gradient_ratios(&varmap, &net.forward(&xs)?, 1_000 + seed)?;
            for (sum, step) in sums.iter_mut().zip(plan.weight_steps()) {
                sum[column] += ratios[&format!("{}.weight", step.path)] / seeds as f64;
            }
        }
    }
    for (sum, step) in sums.iter().zip(plan.weight_steps()) {
        writeln!(
            report,
            "| {} | {:.3e} | {:.3e} | {:.3e} |",
            step.path,
            step.step.gamma.unwrap_or(f64::NAN),
            sum[0],
            sum[1]
        )?;
    }
    writeln!(report)?;
    Ok(())
}

/// The paper's experiment: `x^p` on 500 points of [0, 1], width 4, depth 5.
fn fits(args: &TriangleArgs, report: &mut String) -> Result<(), Error> {
    let started = Instant::now();
    let budget = Budget {
        pretrain_steps: args.pretrain_steps,
        pretrain_rate: args.learning_rate,
        raw_steps: args.raw_steps,
        raw_rate: args.learning_rate,
    };
    writeln!(
        report,
        "## Fitting x^3 and x^11 (the paper's experiment)\n\n500 points evenly spaced on [0, 1], width 4, depth 5 \
         (`Triangle5`: 5 hidden layers), f64, full-batch Adam at learning rate {}, {} runs per row (seeds 0..{}). \
         He: `init: fan_in` trained for {} steps. Reparameterized: random peaks, {} steps through the \
         parameterization (peaks, s_0 and the affine maps, with the constraint), released, then {} steps on the \
         raw weights. MSE on the 500 points after training; pieces of the fitted function on [0, 1], counted exactly.\n",
        args.learning_rate,
        args.runs,
        args.runs,
        args.pretrain_steps + args.raw_steps,
        args.pretrain_steps,
        args.raw_steps
    )?;
    writeln!(report, "| target | method | mean MSE | min MSE | median MSE | max MSE | MSE after pretraining (median) | pieces (median) |")?;
    writeln!(report, "|---|---|---|---|---|---|---|---|")?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut figures = Vec::new();
    for power in [3, 11] {
        let (xs, ys) = power_data(power, 500)?;
        let mut best_curves = Vec::new();
        for (method, reparameterized) in [("He (fan_in)", false), ("reparameterized + pretraining", true)] {
            let queue = Mutex::new(0..args.runs);
            let results = Mutex::new(Vec::new());
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| loop {
                        let Some(seed) = queue.lock().expect("queue").next() else { break };
                        let fit = fit::<Triangle5>(&xs, &ys, seed, reparameterized, budget);
                        results.lock().expect("results").push((seed, fit.map_err(|e| e.to_string())));
                    });
                }
            });
            let mut fits = Vec::new();
            for (seed, fit) in results.into_inner().expect("results") {
                fits.push((seed, fit?));
            }
            fits.sort_by_key(|(seed, _)| *seed);
            let mses: Vec<f64> = fits.iter().map(|(_, f)| f.mse).collect();
            let pieces: Vec<f64> = fits.iter().map(|(_, f)| f.pieces.count() as f64).collect();
            let pretrained: Vec<f64> = fits.iter().filter_map(|(_, f)| f.pretrained_mse).collect();
            writeln!(
                report,
                "| x^{power} | {method} | {:.2e} | {:.2e} | {:.2e} | {:.2e} | {} | {:.0} |",
                mean_std(&mses).0,
                quantile(&mses, 0.0),
                quantile(&mses, 0.5),
                quantile(&mses, 1.0),
                if pretrained.is_empty() { "".to_string() } else { format!("{:.2e}", quantile(&pretrained, 0.5)) },
                quantile(&pieces, 0.5)
            )?;
            // The median run, drawn.
            let median = quantile(&mses, 0.5);
            let (seed, fit) = fits
                .iter()
                .min_by(|a, b| (a.1.mse - median).abs().total_cmp(&(b.1.mse - median).abs()))
                .expect("a run");
            let grid: Vec<f64> = xs.flatten_all()?.to_vec1::<f64>()?;
            let breakpoints = fit
                .pieces
                .breakpoints
                .iter()
                .map(|&b| {
                    let i = ((b * (grid.len() - 1) as f64).round() as usize).min(grid.len() - 1);
                    (b, fit.predictions[i])
                })
                .collect();
            best_curves.push(FittedCurve {
                label: format!("{method}, median run (seed {seed}), MSE {:.1e}", fit.mse),
                values: fit.predictions.clone(),
                breakpoints,
            });
        }
        let path = args.out.join(format!("fit-x{power}.png"));
        let grid: Vec<f64> = xs.flatten_all()?.to_vec1::<f64>()?;
        let target: Vec<f64> = ys.flatten_all()?.to_vec1::<f64>()?;
        plot::fitted_curves(
            &path,
            &format!("x^{power}, width 4, depth 5: median runs (dots: breakpoints)"),
            &grid,
            &target,
            &best_curves,
        )?;
        figures.push(path);
    }
    writeln!(report)?;
    for path in figures {
        writeln!(report, "![]({})\n", path.file_name().expect("a file").to_string_lossy())?;
    }
    writeln!(report, "Time: {:.1} s on {threads} threads.", started.elapsed().as_secs_f64())?;
    Ok(())
}
