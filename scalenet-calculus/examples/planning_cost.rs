//! How long the calculus takes to plan declarations at the sizes users reach: deep chains, many
//! residual blocks, deep nesting, large images. The macro runs this at every `cargo check`, so it
//! is the expansion time less parsing and code generation.
//!
//! ```text
//! cargo run --release -p scalenet-calculus --example planning_cost            # every case
//! cargo run --release -p scalenet-calculus --example planning_cost -- nested  # cases whose name contains "nested"
//! cargo run --release -p scalenet-calculus --example planning_cost -- --list
//! ```
//!
//! `scripts/planning_cost.sh` runs each case in its own process under a time and memory limit, so
//! a case that allocates too much or runs for minutes is reported as such instead of ending the
//! run. Each case prints its median time over a few runs (one run for the slow ones), each run on
//! a fresh thread, and the plan's fingerprint; `SCALENET_DUMP=1` also prints each plan's `Debug`
//! form, to compare the plans of two trees number by number.

use scalenet_calculus::{analyze, LayerSpec, NetworkSpec, Op, Residual, Shape};
use std::time::{Duration, Instant};

fn conv(out_channels: usize, kernel: usize, stride: usize, padding: usize) -> Op {
    Op::Conv2d { out_channels, kernel, stride, padding, bias: true, groups: 1 }
}

fn image(channels: usize, height: usize, width: usize) -> Shape {
    Shape::Image { channels, height, width }
}

/// Residual blocks nested `depth` deep: each main branch is `relu, conv, <the next block>`.
fn nested(depth: usize, channels: usize, shortcut: impl Fn() -> Option<Vec<LayerSpec>>) -> Op {
    let mut inner = vec![LayerSpec::new(Op::Relu), LayerSpec::new(conv(channels, 3, 1, 1))];
    for _ in 0..depth {
        let block = Op::Residual(Residual { alpha: None, beta: Some(0.5), main: inner, shortcut: shortcut() });
        inner = vec![LayerSpec::new(Op::Relu), LayerSpec::new(conv(channels, 3, 1, 1)), LayerSpec::new(block)];
    }
    Op::Residual(Residual { alpha: None, beta: Some(0.5), main: inner, shortcut: shortcut() })
}

fn head(spec: NetworkSpec, classes: usize) -> NetworkSpec {
    spec.layer(Op::Relu).layer(Op::GlobalAvgPool).layer(Op::Linear { out_features: classes, bias: true })
}

/// A 768x768 encoder: a 4x4 strided stem, then stages of two 3x3 convolutions and a 2x2 strided
/// one, down to 12x12, and a global-pool head.
fn encoder_768() -> NetworkSpec {
    let mut spec = NetworkSpec::new(image(3, 768, 768)).layer(conv(16, 4, 4, 0));
    let mut channels = 16;
    for _ in 0..4 {
        for _ in 0..2 {
            spec = spec.layer(Op::Relu).layer(conv(channels, 3, 1, 1));
        }
        channels *= 2;
        spec = spec.layer(Op::Relu).layer(conv(channels, 2, 2, 0));
    }
    head(spec, 10)
}

struct Case {
    name: String,
    spec: NetworkSpec,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: String, spec: NetworkSpec| cases.push(Case { name, spec });
    for depth in [14, 18, 22] {
        let spec =
            NetworkSpec::new(image(4, 8, 8)).layer(conv(4, 3, 1, 1)).layer(nested(depth, 4, || None)).layer(Op::Relu);
        add(format!("nested-{depth}-without-fixed-scalars"), head(spec.with_fixed_scalars(false), 2));
    }
    let spec = NetworkSpec::new(image(4, 8, 8)).layer(conv(4, 3, 1, 1)).layer(nested(40, 4, || None));
    add("nested-40".into(), head(spec, 2));
    let bottleneck = || Some(vec![LayerSpec::new(Op::Bottleneck { out_channels: 4, width: 2, stride: 1, beta: 0.5 })]);
    let spec = NetworkSpec::new(image(4, 8, 8)).layer(conv(4, 3, 1, 1)).layer(nested(30, 4, bottleneck));
    add("nested-30-bottleneck-shortcuts".into(), head(spec, 2));
    for n in [2_500, 5_000, 20_000] {
        let spec = NetworkSpec::new(image(1, 1, n)).layer(conv(1, 3, 1, 1));
        add(format!("row-{n}-conv-global-pool"), head(spec, 2));
    }
    add("empty-2x32768x32768".into(), NetworkSpec::new(image(2, 32_768, 32_768)));
    add("pool-1x65536x2".into(), NetworkSpec::new(image(1, 65_536, 2)).layer(Op::AvgPool2d { kernel: 2, stride: 2 }));
    let spec = NetworkSpec::new(image(3, 2048, 2048)).layer(conv(8, 8, 8, 0)).layer(Op::Relu).layer(conv(8, 4, 4, 0));
    add("head-3x2048x2048".into(), head(spec, 10));
    add("encoder-768".into(), encoder_768());
    add("row-2147483647".into(), NetworkSpec::new(image(1, 1, 2_147_483_647)));
    add("conv1x1-46340x46340".into(), NetworkSpec::new(image(1, 46_340, 46_340)).layer(conv(1, 1, 1, 0)));
    let mut spec = NetworkSpec::new(image(2, 4, 4));
    for _ in 0..2_000 {
        spec = spec.layer(conv(2, 3, 1, 1)).layer(Op::Relu);
    }
    add("chain-2000-convs".into(), spec);
    let mut spec = NetworkSpec::new(image(4, 8, 8)).layer(conv(4, 3, 1, 1));
    for _ in 0..500 {
        let main = vec![LayerSpec::new(Op::Relu), LayerSpec::new(conv(4, 3, 1, 1))];
        spec = spec.layer(Op::Residual(Residual { alpha: None, beta: Some(0.5), main, shortcut: None }));
    }
    add("residual-500-blocks".into(), head(spec, 2));
    cases
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cases = cases();
    if args.iter().any(|a| a == "--list") {
        for case in &cases {
            println!("{}", case.name);
        }
        return;
    }
    let filter = args.first().map(String::as_str).unwrap_or("");
    for case in cases.iter().filter(|case| case.name.contains(filter)) {
        let mut times = Vec::new();
        let mut outcome = String::new();
        // Up to 5 runs, fewer when one takes over a second.
        while times.len() < 5 && times.iter().sum::<Duration>() < Duration::from_secs(1) {
            // A fresh thread each time: nothing the calculus keeps per thread carries over.
            let (elapsed, result) = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let start = Instant::now();
                        let result = analyze(&case.spec);
                        (start.elapsed(), result)
                    })
                    .join()
                    .expect("planning panicked")
            });
            times.push(elapsed);
            outcome = match result {
                Ok(plan) => {
                    format!("{} weight layers, fingerprint {:016x}", plan.weight_steps().count(), plan.fingerprint())
                }
                Err(diagnostics) => {
                    format!("rejected: {}", diagnostics.iter().next().map(|d| d.message.clone()).unwrap_or_default())
                }
            };
        }
        if std::env::var_os("SCALENET_DUMP").is_some() {
            println!("{:?}", analyze(&case.spec).map(|p| format!("{p:?}")));
        }
        times.sort();
        let median = times[times.len() / 2];
        println!("{:<36} {:>12.3} ms  ({} runs; {outcome})", case.name, median.as_secs_f64() * 1e3, times.len());
    }
}
