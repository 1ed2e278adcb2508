//! `scalenet-experiments mirrored`: mirrored orthogonal initialization measured against Gaussian
//! inits (see `fixtures::mirrored` for the networks and the statistics).

use fixtures::mirrored::{self as m, Variant};
use fixtures::table2::{self, Settings};
use scalenet::plot::{self, Band};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(clap::Args)]
pub struct MirroredArgs {
    /// The LIBSVM file the trainability runs use.
    #[arg(long, default_value = "data/libsvm/digits.svm")]
    data: PathBuf,
    /// Where report.md and the figures go.
    #[arg(long)]
    out: PathBuf,
    /// Smoke-run settings: fewer seeds, inits and epochs, shallower networks.
    #[arg(long)]
    quick: bool,
}

pub fn run(args: MirroredArgs) -> Result<(), Error> {
    crate::input_file("--data", &args.data)?;
    crate::output_folder("--out", &args.out)?;
    let mut report = String::from("# Mirrored orthogonal initialization, measured\n\n");
    let started = Instant::now();
    spectra(&args, &mut report)?;
    output_law(&args, &mut report)?;
    trainability(&args, &mut report)?;
    writeln!(report, "\nTotal time: {:.0} s.", started.elapsed().as_secs_f64())?;
    crate::write_atomically(&args.out.join("report.md"), &report)?;
    println!("{report}");
    Ok(())
}

/// Singular values of the input-output Jacobian at initialization, MLPs 100 -> 100 x (d-1) -> 100.
fn spectra(args: &MirroredArgs, report: &mut String) -> Result<(), Error> {
    let started = Instant::now();
    let (depths, seeds): (&[usize], u64) = if args.quick { (&[10], 2) } else { (&[10, 50], 8) };
    let seeds: Vec<u64> = (0..seeds).collect();
    writeln!(
        report,
        "## Jacobian spectra at initialization\n\nMLP 100 -> 100 x (depth - 1) -> 100, ReLU, {} inits each, at one fixed input. \
         Difference subspace: the 50 input directions the first layer's mirrored pairs read (the row space of \
         `W[:50] - W[50:]`, a random 50-dimensional subspace for Gaussian weights). Whole input: all 100 directions. \
         Condition: largest / smallest singular value (scale-free: the calculus's output scalar sets the scale).\n",
        seeds.len()
    )?;
    writeln!(report, "| init | depth | difference: min | median | max | max abs(σ-1) | condition | 90%/10% | whole: zero σ | whole: largest |")?;
    writeln!(report, "|---|---|---|---|---|---|---|---|---|---|")?;
    let mut figures = Vec::new();
    for &depth in depths {
        let mut histograms = Vec::new();
        for variant in Variant::ALL {
            let plan = m::plan(&m::mlp(100, 100, depth, 100, variant))?;
            let spectra = m::spectra(&plan, &seeds)?;
            let difference: Vec<f64> = spectra.iter().flat_map(|s| s.difference.iter().copied()).collect();
            let whole: Vec<f64> = spectra.iter().flat_map(|s| s.whole.iter().copied()).collect();
            let largest = whole.iter().copied().fold(0.0, f64::max);
            let zeros = whole.iter().filter(|&&s| s < largest * 1e-6).count() as f64 / seeds.len() as f64;
            let min = difference.iter().copied().fold(f64::MAX, f64::min);
            let max = difference.iter().copied().fold(0.0, f64::max);
            let off_one = difference.iter().map(|s| (s - 1.0).abs()).fold(0.0, f64::max);
            writeln!(
                report,
                "| {} | {depth} | {min:.4e} | {:.4e} | {max:.4e} | {off_one:.2e} | {:.3e} | {:.3e} | {zeros:.0} of 100 | {largest:.4e} |",
                variant.name(),
                m::quantile(&difference, 0.5),
                max / min,
                m::quantile(&difference, 0.9) / m::quantile(&difference, 0.1),
            )?;
            if matches!(variant, Variant::He | Variant::MirroredOrthogonal) {
                histograms.push((format!("{} (difference subspace)", variant.name()), difference));
            }
        }
        let path = args.out.join(format!("jacobian-depth{depth}.png"));
        plot::log_histograms(
            &path,
            &format!("Jacobian singular values at initialization, depth {depth}, width 100"),
            "singular value (log scale)",
            &histograms,
            60,
        )?;
        figures.push(path);
    }
    writeln!(report)?;
    for path in figures {
        writeln!(report, "![]({})\n", path.file_name().expect("a file").to_string_lossy())?;
    }
    writeln!(report, "Time: {:.1} s.\n", started.elapsed().as_secs_f64())?;
    Ok(())
}

/// `||x^L||^2 / ||x^0||^2` over many inits against the exact law for Gaussian weights.
fn output_law(args: &MirroredArgs, report: &mut String) -> Result<(), Error> {
    let started = Instant::now();
    let inits = if args.quick { 200 } else { 1000 };
    let law_count = 200_000;
    writeln!(
        report,
        "## The exact output law (Burkholz & Dubatovka)\n\n`||x^L||² / ||x^0||²` of the output (the last, linear layer) of an MLP \
         100 -> 100 x (L-1) -> 100 at one fixed input, over {inits} inits, against {law_count} draws of the law \
         `prod_(l<L) (2/n) chi²_(K_l) x (2/n) chi²_100`, `K_l ~ Binomial(100, 1/2)`, for He (fan-in Gaussian, no \
         fixed scalars); and the same quantity under `init: mirrored(orthogonal)`. Two-sample Kolmogorov-Smirnov \
         statistic D and its asymptotic p-value.\n"
    )?;
    writeln!(report, "| L | init | 5% | 25% | 50% | 75% | 95% | mean | std | KS D | p |")?;
    writeln!(report, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    let row =
        |report: &mut String, depth: usize, label: &str, values: &[f64], ks: Option<(f64, f64)>| -> Result<(), Error> {
            let (mean, std) = m::mean_std(values);
            let q = |p: f64| m::quantile(values, p);
            let ks = ks.map_or_else(|| " | ".to_string(), |(d, p)| format!("{d:.4} | {p:.3}"));
            writeln!(
                report,
                "| {depth} | {label} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {mean:.3} | {std:.3} | {ks} |",
                q(0.05),
                q(0.25),
                q(0.5),
                q(0.75),
                q(0.95)
            )?;
            Ok(())
        };
    for depth in [1, 5, 10] {
        let he = m::output_norms(&m::plan(&m::mlp(100, 100, depth, 100, Variant::He))?, inits)?;
        let law = m::law_samples(100, 100, depth, 100, law_count, 1_000 + depth as u64);
        let d = m::ks_statistic(&he, &law);
        row(report, depth, "law", &law, None)?;
        row(report, depth, "fan_in (He)", &he, Some((d, m::ks_p_value(d, he.len(), law.len()))))?;
        let mirrored = m::output_norms(&m::plan(&m::mlp(100, 100, depth, 100, Variant::MirroredOrthogonal))?, inits)?;
        row(report, depth, "mirrored(orthogonal)", &mirrored, None)?;
    }
    writeln!(report, "\nTime: {:.1} s.\n", started.elapsed().as_secs_f64())?;
    Ok(())
}

/// Deep narrow MLPs trained with plain SGD on a real dataset: median and IQR over seeds of the
/// training loss after a fixed budget, per learning rate.
fn trainability(args: &MirroredArgs, report: &mut String) -> Result<(), Error> {
    let started = Instant::now();
    let settings = Settings {
        learning_rates: if args.quick {
            vec![2f64.powi(-8), 2f64.powi(-10)]
        } else {
            (6..=14).step_by(2).map(|e| 2f64.powi(-e)).collect()
        },
        seeds: if args.quick { 2 } else { 3 },
        epochs: if args.quick { 1 } else { 3 },
        batch_size: 32,
        weight_decay: 0.0,
        fixed_scalars: true,
        max_examples: if args.quick { Some(256) } else { None },
    };
    let depths: &[usize] = if args.quick { &[20] } else { &[20, 50] };
    let data = table2::load(&args.data, &settings)?;
    let (examples, inputs) = data.features.dims2()?;
    writeln!(
        report,
        "## Trainability of deep narrow MLPs\n\n`{}` ({examples} examples, {inputs} features, {} classes, each sample \
         whitened), MLP {inputs} -> 100 x (depth - 1) -> {}, ReLU; plain SGD, minibatch {}, {} epochs, per-sample \
         learning rates {:?} (the minibatch mean's rate is {} times larger), no weight decay, output calibrated to \
         std 0.05 after the first minibatch for every init (section 7); {} seeds. Training loss on the whole training \
         set after the budget: median [25%, 75%] over seeds at each init's best rate (lowest median).\n",
        data.name,
        data.classes,
        data.classes,
        settings.batch_size,
        settings.epochs,
        settings.learning_rates,
        settings.batch_size,
        settings.seeds,
    )?;
    writeln!(report, "| depth | init | best rate | median | 25% | 75% |")?;
    writeln!(report, "|---|---|---|---|---|---|")?;
    let edges = [settings.learning_rates[0], *settings.learning_rates.last().expect("a rate")];
    let mut panels = Vec::new();
    for &depth in depths {
        let mut bands = Vec::new();
        for variant in Variant::ALL {
            let plan = m::plan(&m::mlp(inputs, 100, depth, data.classes, variant))?;
            let losses =
                table2::train_population(&data, &plan, &settings, Some(0.05), &candle_core::Device::Cpu, &|_| {})?;
            let points: Vec<(f64, f64, f64, f64)> = settings
                .learning_rates
                .iter()
                .zip(&losses)
                .map(|(&rate, seeds)| {
                    (rate, m::quantile(seeds, 0.5), m::quantile(seeds, 0.25), m::quantile(seeds, 0.75))
                })
                .collect();
            let best = points.iter().min_by(|a, b| a.1.total_cmp(&b.1)).expect("a rate");
            writeln!(
                report,
                "| {depth} | {} | 2^{:.0}{} | {:.4} | {:.4} | {:.4} |",
                variant.name(),
                best.0.log2(),
                if edges.contains(&best.0) { " (grid edge)" } else { "" },
                best.1,
                best.2,
                best.3
            )?;
            println!("depth {depth} {}: {points:?}", variant.name());
            bands.push(Band { label: variant.name().to_string(), points });
        }
        panels.push((format!("depth {depth}, width 100"), bands));
    }
    let path = args.out.join("trainability.png");
    plot::sweep_panels(
        &path,
        &format!("{}: training loss after {} epochs of SGD (median, 25-75% over seeds)", data.name, settings.epochs),
        "learning rate (per sample)",
        "training loss",
        &panels,
    )?;
    writeln!(report, "\n![]({})\n", path.file_name().expect("a file").to_string_lossy())?;
    writeln!(report, "Time: {:.1} s.", started.elapsed().as_secs_f64())?;
    Ok(())
}
