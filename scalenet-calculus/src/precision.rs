//! Which number formats a plan's gradients fit, and at what loss scale: mixed precision chosen
//! before training from the moments the calculus predicts.
//!
//! Half-precision training multiplies the loss by a scale `S` so that the backward signals, which
//! are small (a mean-reduced loss divides them by the batch), land inside the format's normal
//! range; the optimizer divides the gradients by `S` again in f32. Frameworks guess `S` (PyTorch's
//! `GradScaler` starts at 2^16) and adjust it when gradients overflow. The plan predicts, per
//! example and for a unit output gradient, the standard deviation of every backward signal
//! (`sqrt(E[dx²])` at every step) and of every weight gradient (`sqrt(γ E[W²])`, Theorem 1), so
//! `S` can be chosen statically: the power of two that centres those standard deviations, in
//! octaves, in the window of the format that keeps [`OVERFLOW_MARGIN`] octaves below its largest
//! value and [`UNDERFLOW_MARGIN`] octaves above its smallest normal. A network whose signals span
//! more octaves than that window cannot be represented with any single scale
//! ([`check_format`]).
//!
//! The actual gradients scale with the loss's: [`OutputGradient`] says how (softmax cross-entropy
//! averaged over a batch: [`OutputGradient::cross_entropy`]).
//!
//! ```
//! use scalenet_calculus::precision::{OutputGradient, ScalePlan};
//! use scalenet_calculus::{analyze, Format, NetworkSpec, Op, Shape};
//!
//! let spec = NetworkSpec::new(Shape::Vector { features: 784 })
//!     .named("fc1", Op::Linear { out_features: 384, bias: true })
//!     .layer(Op::Relu)
//!     .named("fc2", Op::Linear { out_features: 10, bias: true });
//! let plan = analyze(&spec).unwrap();
//! let scales = ScalePlan::new(&plan, Format::F16, OutputGradient::cross_entropy(10, 128));
//! // Every predicted gradient lands inside f16's window, several octaves from both ends.
//! assert!(scales.fits());
//! assert!(scales.loss_scale > 1.0);
//! println!("{scales}");
//! ```

use crate::diagnostic::{Diagnostics, LayerField, Location, Rule};
use crate::plan::{Plan, Step, StepRef};
use crate::report::{describe, number};
use crate::spec::{Format, LayerId};
use std::fmt;

/// Octaves kept between a predicted standard deviation and the format's largest value: a value
/// 16 standard deviations out still fits (gradients are heavier-tailed than a Gaussian).
pub const OVERFLOW_MARGIN: f64 = 4.0;

/// Octaves kept between a predicted standard deviation and the format's smallest normal value:
/// then about 5% of a Gaussian's entries are subnormal and 2 in 100,000 flush to zero.
pub const UNDERFLOW_MARGIN: f64 = 4.0;

/// What a predicted signal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// A step's output, `x` (the report's `E[x²]`, for a centred unit-variance input): the loss
    /// scale does not reach it.
    Forward,
    /// The gradient reaching a step's output, `dL/dx` (the report's `E[dx²]`).
    Backward,
    /// A weight's gradient, `dL/dW` (the report's `γ E[W²]`).
    WeightGradient,
}

/// A signal of the backward pass, with its standard deviation per example for a unit output
/// gradient (`E[dy²] = 1`, the report's normalization).
#[derive(Debug, Clone, Copy)]
pub struct Signal<'a> {
    /// The step, with its parameter path.
    pub at: StepRef<'a>,
    /// What it is.
    pub kind: SignalKind,
    /// Its predicted standard deviation per example, for `E[dy²] = 1` at the output.
    pub unit_std: f64,
    /// The declared layer it belongs to: the step's, or for a scalar the calculus inserted, the
    /// last declared layer before it (`None` before the first).
    pub layer: Option<(LayerId, &'a str)>,
}

impl Signal<'_> {
    /// Where it is, for messages: the path and the op.
    pub fn describe(&self) -> String {
        let what = match self.kind {
            SignalKind::Forward => "the output of",
            SignalKind::Backward => "the gradient after",
            SignalKind::WeightGradient => "the weight gradient of",
        };
        let op = describe(self.at.step);
        match (self.at.step.layer_id(), self.layer) {
            (Some(_), _) if !self.at.path.is_empty() => format!("{what} `{}` ({op})", self.at.path),
            (None, Some((_, path))) if !path.is_empty() => format!("{what} the {op} after `{path}`"),
            _ => format!("{what} the {op}"),
        }
    }
}

/// Every step's output, backward signal and weight gradient in `plan`, in network order. Zero
/// predictions (nothing flows back) are left out.
pub fn signals(plan: &Plan) -> Vec<Signal<'_>> {
    let mut signals = Vec::new();
    let mut layer = None;
    for at in plan.walk() {
        let step: &Step = at.step;
        if let Some(id) = step.layer_id() {
            layer = Some((id, at.path));
        }
        if step.forward.second > 0.0 && step.forward.second.is_finite() {
            signals.push(Signal { at, kind: SignalKind::Forward, unit_std: step.forward.second.sqrt(), layer });
        }
        if step.backward > 0.0 && step.backward.is_finite() {
            signals.push(Signal { at, kind: SignalKind::Backward, unit_std: step.backward.sqrt(), layer });
        }
        if let (Some(weight), Some(gamma)) = (step.weight(), step.gamma) {
            let second = gamma * weight.second_moment;
            if second > 0.0 && second.is_finite() {
                signals.push(Signal { at, kind: SignalKind::WeightGradient, unit_std: second.sqrt(), layer });
            }
        }
    }
    signals
}

/// The gradient of the loss with respect to the network's output, which every backward signal is
/// proportional to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputGradient {
    /// Standard deviation of one entry of one example's loss gradient, `dℓ/dy`.
    pub entry_std: f64,
    /// Examples the loss averages over (1 for a summed loss).
    pub batch: usize,
}

impl OutputGradient {
    /// Softmax cross-entropy over `classes`, averaged over `batch` examples, at initialization:
    /// the output is small (section 7), so the softmax is nearly uniform and `dℓ/dy = p - onehot`
    /// has `E[(p - onehot)²] = (C - 1)/C²` per entry.
    pub fn cross_entropy(classes: usize, batch: usize) -> Self {
        let c = classes.max(1) as f64;
        OutputGradient { entry_std: (c - 1.0).max(0.0).sqrt() / c, batch: batch.max(1) }
    }

    /// The factor from a signal's unit standard deviation to the actual one: 1 for an output (the
    /// loss does not reach it), the loss's gradient divided by the batch for a backward signal
    /// (each example's own), and by the square root of the batch for a weight gradient (a sum of
    /// the batch's independent per-example gradients).
    pub fn factor(&self, kind: SignalKind) -> f64 {
        let batch = self.batch as f64;
        match kind {
            SignalKind::Forward => 1.0,
            SignalKind::Backward => self.entry_std / batch,
            SignalKind::WeightGradient => self.entry_std / batch.sqrt(),
        }
    }
}

/// The octaves of standard deviation that `format` holds with the margins: the widest span of
/// signals one loss scale can fit.
pub fn usable_octaves(format: Format) -> f64 {
    format.max().log2() - format.min_normal().log2() - OVERFLOW_MARGIN - UNDERFLOW_MARGIN
}

/// The window of standard deviations, in octaves (`log2`), that `format` holds with the margins.
fn window(format: Format) -> (f64, f64) {
    (format.min_normal().log2() + UNDERFLOW_MARGIN, format.max().log2() - OVERFLOW_MARGIN)
}

/// A signal at the chosen scale.
#[derive(Debug, Clone, Copy)]
pub struct ScaledSignal<'a> {
    /// The signal.
    pub signal: Signal<'a>,
    /// Its predicted standard deviation in the format: unit std × the loss's factor × the scale.
    pub std: f64,
}

impl ScaledSignal<'_> {
    /// Octaves from the predicted standard deviation up to the format's largest value.
    pub fn overflow_headroom(&self, format: Format) -> f64 {
        format.max().log2() - self.std.log2()
    }

    /// Octaves from the format's smallest normal value up to the predicted standard deviation.
    pub fn underflow_headroom(&self, format: Format) -> f64 {
        self.std.log2() - format.min_normal().log2()
    }
}

/// The loss scale for a plan trained in a format, and every signal's predicted standard deviation
/// and headroom at that scale: what the report prints per step.
#[derive(Debug, Clone)]
pub struct ScalePlan<'a> {
    /// The format.
    pub format: Format,
    /// The loss's gradient the signals are scaled by.
    pub gradient: OutputGradient,
    /// The power of two the loss is multiplied by before the backward pass: in f16 the one that
    /// centres the backward signals in its window; in f32 and bf16 (f32's range) 1, unless the
    /// signals do not fit unscaled.
    pub loss_scale: f64,
    /// Every signal at that scale, in network order.
    pub signals: Vec<ScaledSignal<'a>>,
}

impl<'a> ScalePlan<'a> {
    /// The scale that centres the plan's backward signals and weight gradients, in octaves, in the
    /// window of `format` (for f32 and bf16, 1 when they fit unscaled).
    pub fn new(plan: &'a Plan, format: Format, gradient: OutputGradient) -> Self {
        let unscaled: Vec<ScaledSignal<'a>> = signals(plan)
            .into_iter()
            .map(|signal| ScaledSignal { signal, std: signal.unit_std * gradient.factor(signal.kind) })
            .collect();
        let backward = |s: &&ScaledSignal<'a>| s.signal.kind != SignalKind::Forward;
        let (low, high) = octave_range(unscaled.iter().filter(backward).map(|s| s.std));
        let (bottom, top) = window(format);
        // f32's exponent range (f32, bf16) holds any plan unscaled, as frameworks train bf16; f16's
        // is narrow enough that the centre is worth moving to even when the signals fit.
        let wide = format.min_normal() <= f32::MIN_POSITIVE as f64;
        let loss_scale = if unscaled.is_empty() || (wide && low >= bottom && high <= top) {
            1.0
        } else {
            2f64.powf(((bottom + top) / 2.0 - (low + high) / 2.0).round())
        };
        let signals = unscaled
            .into_iter()
            .map(|s| match s.signal.kind {
                SignalKind::Forward => s,
                _ => ScaledSignal { std: s.std * loss_scale, ..s },
            })
            .collect();
        ScalePlan { format, gradient, loss_scale, signals }
    }

    /// Whether every signal sits inside the window: at least [`OVERFLOW_MARGIN`] octaves below the
    /// largest value and [`UNDERFLOW_MARGIN`] above the smallest normal.
    pub fn fits(&self) -> bool {
        self.signals.iter().all(|s| {
            s.overflow_headroom(self.format) >= OVERFLOW_MARGIN && s.underflow_headroom(self.format) >= UNDERFLOW_MARGIN
        })
    }

    /// The signal with the least headroom to overflow and the one with the least to the smallest
    /// normal.
    pub fn extremes(&self) -> Option<(&ScaledSignal<'a>, &ScaledSignal<'a>)> {
        let highest = self.signals.iter().max_by(|a, b| a.std.total_cmp(&b.std))?;
        let lowest = self.signals.iter().min_by(|a, b| a.std.total_cmp(&b.std))?;
        Some((highest, lowest))
    }
}

/// What a step does, in a few words: the report's op, a fixed scalar without its reasons.
pub fn describe_step(step: &Step) -> String {
    match &step.op {
        crate::plan::StepOp::FixedScale { factor, .. } => format!("fixed ×{}", number(*factor)),
        _ => describe(step),
    }
}

/// The lowest and highest `log2` of positive values (0, 0 for none).
fn octave_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|v| *v > 0.0)
        .map(f64::log2)
        .fold(None, |range: Option<(f64, f64)>, v| Some(range.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v)))))
        .unwrap_or((0.0, 0.0))
}

impl fmt::Display for ScalePlan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: loss scale 2^{} for a loss gradient of std {} per entry averaged over {} examples; largest value {}, \
             smallest normal {}",
            self.format,
            self.loss_scale.log2().round(),
            number(self.gradient.entry_std),
            self.gradient.batch,
            number(self.format.max()),
            number(self.format.min_normal()),
        )?;
        let header = ["layer", "op", "x", "↑", "↓", "dx", "↑", "↓", "dW", "↑", "↓"].map(String::from);
        let mut rows = vec![header];
        let mut index = 0;
        while index < self.signals.len() {
            let at = self.signals[index].signal.at;
            let mut row: [String; 11] = Default::default();
            row[0] = if at.path.is_empty() { "·".to_string() } else { at.path.to_string() };
            row[1] = describe_step(at.step);
            while index < self.signals.len() && std::ptr::eq(self.signals[index].signal.at.step, at.step) {
                let s = &self.signals[index];
                let column = match s.signal.kind {
                    SignalKind::Forward => 2,
                    SignalKind::Backward => 5,
                    SignalKind::WeightGradient => 8,
                };
                row[column] = number(s.std);
                row[column + 1] = format!("{:.1}", s.overflow_headroom(self.format));
                row[column + 2] = format!("{:.1}", s.underflow_headroom(self.format));
                index += 1;
            }
            rows.push(row);
        }
        let widths: Vec<usize> =
            (0..11).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        for row in rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, width))| if c < 2 { format!("{cell:<width$}") } else { format!("{cell:>width$}") })
                .collect();
            writeln!(f, "{}", cells.join("  ").trim_end())?;
        }
        writeln!(
            f,
            "columns: x, dx, dW = the predicted std of the step's output, of the gradient reaching it and of its weight \
             gradient, in {} at this scale (outputs are not scaled); ↑ = octaves (powers of two) from it up to the \
             largest value, ↓ = octaves from the smallest normal up to it",
            self.format
        )?;
        Ok(())
    }
}

/// Rule: a network declared to train in a format must have signals that it can hold: outputs
/// inside its window as they are, and backward signals that one loss scale can fit into it.
///
/// The calculus predicts every output for a centred unit-variance input, and every backward signal
/// and weight gradient up to a common factor (the loss's gradient), so the spread of the latter, in
/// octaves, is known before training and depends on neither the loss nor the scale: the span
/// between the smallest and the largest per-example standard deviation. In f16 the window is
/// [`usable_octaves`] wide (22 octaves): signals that span more lose the smallest to zero or
/// overflow the largest at every scale, and an output outside the window does so with no scale to
/// move it. A declaration with `precision: f16` that breaks either is an error on the layer of the
/// first output outside the window, or of the smallest gradient; one without a `precision` gets a warning there, since it could not train
/// in f16 (bf16 and f32, with f32's range, hold any plan this could flag). Weight gradients count
/// per example here; averaged over a batch `B` they sit `log2(B)/2` octaves higher against the
/// backward signals.
pub fn check_format(plan: &Plan, declared: Option<Format>) -> Diagnostics {
    let mut diagnostics = Diagnostics::default();
    let format = match declared {
        None | Some(Format::F16) => Format::F16,
        Some(_) => return diagnostics,
    };
    let fix = match declared {
        Some(_) => "or declare `precision: bf16` (f32's range in 16 bits) or `precision: f32`",
        None => "or, if it trains in bf16 or f32, declare `precision: bf16` or `precision: f32` to say so",
    };
    let signals = signals(plan);
    let (bottom, top) = window(format);
    let outside = signals
        .iter()
        .filter(|s| s.kind == SignalKind::Forward)
        .map(|s| (s, s.unit_std.log2()))
        .find(|(_, octave)| *octave < bottom || *octave > top);
    if let Some((output, octave)) = outside {
        let side = if octave < bottom { "below" } else { "above" };
        let message = format!(
            "{} is predicted at std {} (2^{octave:.1}), {side} the stds that f16 holds ({} to {}, {UNDERFLOW_MARGIN} \
             octaves inside its range at each end), and no loss scale reaches the forward pass, so it would not \
             train in f16: remove the multipliers that shrink or grow it (a `scale`, a small `output_std`), {fix}",
            output.describe(),
            number(output.unit_std),
            number(2f64.powf(bottom)),
            number(2f64.powf(top)),
        );
        diagnostics.push(Rule::PrecisionRange, location(output), message);
        return diagnostics;
    }
    let backward = signals.iter().filter(|s| s.kind != SignalKind::Forward);
    let (Some(highest), Some(lowest)) = (
        backward.clone().max_by(|a, b| a.unit_std.total_cmp(&b.unit_std)),
        backward.min_by(|a, b| a.unit_std.total_cmp(&b.unit_std)),
    ) else {
        return diagnostics;
    };
    let span = (highest.unit_std / lowest.unit_std).log2();
    let usable = usable_octaves(format);
    if span > usable {
        let message = format!(
            "the predicted gradients span {span:.1} octaves, from {} (std {} per example for a unit output \
             gradient) to {} ({}), more than the {usable:.0} that f16 holds with one loss scale and margins of \
             {OVERFLOW_MARGIN} octaves at each end, so it would not train in f16: some would flush to zero or \
             overflow at any scale; make them more even (remove the multipliers between the two: a `scale`, a \
             small `output_std`), {fix}",
            lowest.describe(),
            number(lowest.unit_std),
            highest.describe(),
            number(highest.unit_std),
        );
        diagnostics.push(Rule::PrecisionRange, location(lowest), message);
    }
    diagnostics
}

/// The declared layer a signal belongs to (the network's input for a scalar the calculus inserted
/// before any layer).
fn location(signal: &Signal<'_>) -> Location {
    match signal.layer {
        Some((id, _)) => Location::layer(id, LayerField::Kind),
        None => Location::Network(crate::diagnostic::NetworkField::Input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{analyze, NetworkSpec, Op, Shape};

    fn mlp(widths: &[usize]) -> NetworkSpec {
        let mut spec = NetworkSpec::new(Shape::Vector { features: widths[0] });
        for (i, &width) in widths[1..].iter().enumerate() {
            if i > 0 {
                spec = spec.layer(Op::Relu);
            }
            spec = spec.named(&format!("fc{}", i + 1), Op::Linear { out_features: width, bias: true });
        }
        spec
    }

    #[test]
    fn formats_have_their_ieee_limits() {
        assert_eq!(Format::F16.max(), half_max());
        assert_eq!(Format::F16.min_normal(), 6.103515625e-5);
        assert_eq!(usable_octaves(Format::F16).round(), 22.0);
        assert!(usable_octaves(Format::Bf16) > 240.0);
        assert_eq!(Format::from_name("bf16"), Some(Format::Bf16));
    }

    /// (2 - 2^-10) 2^15, the largest f16, written from the format's definition.
    fn half_max() -> f64 {
        (2.0 - 2f64.powi(-10)) * 2f64.powi(15)
    }

    #[test]
    fn the_scale_centres_the_signals_in_the_window() {
        let plan = analyze(&mlp(&[784, 256, 256, 10])).unwrap();
        let scales = ScalePlan::new(&plan, Format::F16, OutputGradient::cross_entropy(10, 64));
        assert!(scales.fits());
        let scaled = scales.signals.iter().filter(|s| s.signal.kind != SignalKind::Forward);
        let (low, high) = octave_range(scaled.map(|s| s.std));
        let (bottom, top) = window(Format::F16);
        // Centred to within the rounding to a power of two.
        let off_centre = (low + high) / 2.0 - (bottom + top) / 2.0;
        assert!(off_centre.abs() <= 0.5, "{off_centre}");
        // bf16 has f32's exponent: no scale needed.
        assert_eq!(ScalePlan::new(&plan, Format::Bf16, OutputGradient::cross_entropy(10, 64)).loss_scale, 1.0);
    }

    #[test]
    fn the_scale_multiplies_every_signal_by_the_loss_gradient() {
        let plan = analyze(&mlp(&[100, 50, 10])).unwrap();
        let gradient = OutputGradient { entry_std: 0.25, batch: 16 };
        let scales = ScalePlan::new(&plan, Format::F16, gradient);
        for (scaled, signal) in scales.signals.iter().zip(signals(&plan)) {
            let expected = match signal.kind {
                SignalKind::Forward => signal.unit_std,
                SignalKind::Backward => signal.unit_std * 0.25 / 16.0 * scales.loss_scale,
                SignalKind::WeightGradient => signal.unit_std * 0.25 / 4.0 * scales.loss_scale,
            };
            assert!((scaled.std / expected - 1.0).abs() < 1e-12);
        }
        // The output's own gradient is the loss gradient per example.
        let last = scales.signals.iter().rfind(|s| s.signal.kind == SignalKind::Backward).unwrap();
        assert!((last.std / scales.loss_scale - 0.25 / 16.0).abs() < 1e-12);
    }

    /// `depth` linear layers of `width`, each followed by ReLU and `scale(0.5)`: every multiplier
    /// halves the signals, forward and backward, and the calculus never cancels a `scale`.
    fn damped_mlp(depth: usize) -> NetworkSpec {
        let mut spec = NetworkSpec::new(Shape::Vector { features: 64 });
        for i in 0..depth {
            spec = spec
                .named(&format!("fc{i}"), Op::Linear { out_features: 16, bias: true })
                .layer(Op::Relu)
                .layer(Op::Scale { factor: 0.5 });
        }
        spec.named("out", Op::Linear { out_features: 10, bias: true })
    }

    #[test]
    fn depth_of_balanced_layers_spreads_nothing() {
        // The calculus balances every layer: 40 layers span what 4 do.
        let span = |depth| {
            let plan = analyze(&mlp(&[[64].as_slice(), &vec![16; depth], &[10]].concat())).unwrap();
            let backward: Vec<f64> =
                signals(&plan).iter().filter(|s| s.kind != SignalKind::Forward).map(|s| s.unit_std).collect();
            let (low, high) = octave_range(backward.into_iter());
            high - low
        };
        assert!((span(40) - span(4)).abs() < 0.5, "{} {}", span(40), span(4));
        assert!(check_format(
            &analyze(&mlp(&[[64].as_slice(), &vec![16; 40], &[10]].concat())).unwrap(),
            Some(Format::F16)
        )
        .is_empty());
    }

    #[test]
    fn a_damped_deep_mlp_does_not_fit_f16() {
        let fits = analyze(&damped_mlp(4)).unwrap();
        assert!(check_format(&fits, Some(Format::F16)).is_empty());
        let deep = analyze(&damped_mlp(24)).unwrap();
        let diagnostics = check_format(&deep, Some(Format::F16));
        assert_eq!(diagnostics.0.len(), 1);
        assert_eq!(diagnostics.0[0].rule, Rule::PrecisionRange);
        assert!(diagnostics.0[0].message.contains("no loss scale"), "{}", diagnostics.0[0].message);
        // bf16 holds it; so does a declaration that says it trains in f32.
        assert!(check_format(&deep, Some(Format::Bf16)).is_empty());
        assert!(check_format(&deep, Some(Format::F32)).is_empty());
        assert!(!check_format(&deep, None).is_empty());
    }

    #[test]
    fn cross_entropy_gradient_at_a_uniform_softmax() {
        // p = 1/C: one entry (1 - 1/C)², C - 1 entries 1/C², averaged over the C entries.
        let c = 10.0f64;
        let expected = (((1.0 - 1.0 / c).powi(2) + (c - 1.0) / (c * c)) / c).sqrt();
        assert!((OutputGradient::cross_entropy(10, 1).entry_std - expected).abs() < 1e-12);
    }
}
