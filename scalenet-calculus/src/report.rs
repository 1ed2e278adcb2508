//! The plan as a table: what a user reads in `report()` and in the struct's rustdoc.

use crate::plan::{Plan, Step, StepOp};
use crate::spec::Op;
use crate::spec::{Mirror, Shape, WeightLaw};
use std::fmt;

/// Formats a positive quantity with 4 significant digits, switching to scientific notation
/// outside [1e-3, 1e4).
pub fn number(value: f64) -> String {
    // The decimals follow the value as rounded to 4 digits, so that 0.99999 prints as 1.000, not
    // 1.0000 (and 9999.9 as 1.000e4).
    let rounded: f64 = format!("{value:.3e}").parse().unwrap_or(value);
    if value == 0.0 {
        "0".to_string()
    } else if (1e-3..1e4).contains(&rounded.abs()) {
        let digits = (3 - rounded.abs().log10().floor() as i32).max(0) as usize;
        format!("{rounded:.digits$}")
    } else {
        format!("{value:.3e}")
    }
}

const COLUMNS: usize = 12;

/// A coherence factor beyond this (or below its inverse) gets a note under the table: the layer's
/// conditioning then rests on the coherence model, not on the paper's calculus alone.
pub const STRONG_COHERENCE: f64 = 1.5;

/// Layers the note names before it counts the rest.
const NOTE_LAYERS: usize = 8;

/// A global pool whose output is predicted to be at least this much channel offset gets a note.
pub const OFFSET_DOMINATED_POOL: f64 = 0.9;

/// For an average pool that takes a map of several positions to one (a global pool), the share of
/// its output's second moment that is its input's channel-coherent moment ([`Moments::coherent`]):
/// the channel offsets that ReLU means put there, the same for every input. Averaging keeps them
/// and shrinks what varies between positions, which is what depends on the input.
///
/// With `centred` rows after it, which do not see the common mean, the share of what is left
/// without it.
///
/// [`Moments::coherent`]: crate::moments::Moments::coherent
pub fn global_pool_offset_share(step: &Step, centred: bool) -> Option<f64> {
    let pools = matches!(&step.op, StepOp::Declared { op: Op::AvgPool2d { .. } | Op::GlobalAvgPool, .. });
    let global = step.input_shape.area() > 1 && step.output_shape.area() == 1;
    let common = if centred { step.forward.mean * step.forward.mean } else { 0.0 };
    let total = step.forward.second - common;
    (pools && global && total > 0.0).then(|| ((step.input.coherent - common).max(0.0) / total).min(1.0))
}

/// The steps whose gamma (or bias gamma) the correlations between positions change by more than
/// [`STRONG_COHERENCE`], as `path ×κ bias ×κ_bias`.
fn strongly_coherent(plan: &Plan) -> Vec<String> {
    plan.walk()
        .into_iter()
        .filter_map(|s| {
            let strong = |factor: Option<f64>| factor.filter(|f| f.ln().abs() > STRONG_COHERENCE.ln());
            let parts: Vec<String> = [("", strong(s.step.coherence)), ("bias ", strong(s.step.bias_coherence))]
                .into_iter()
                .filter_map(|(what, factor)| factor.map(|f| format!("{what}×{}", number(f))))
                .collect();
            (!parts.is_empty()).then(|| format!("{} {}", s.path, parts.join(" ")))
        })
        .collect()
}

fn coherence_note(plan: &Plan, strong: &[String]) -> String {
    let what = if plan.spatial_coherence {
        "the plan compensates them (in c_l and the fixed scalars), so every γ is still equal at initialization; \
         nothing to do unless training is unstable there, and then `centred_weights: true` removes the part the \
         channel offsets cause"
    } else {
        "`spatial_coherence` is off, so the plan does not compensate them and these layers start with gammas that \
         differ by those factors: remove `spatial_coherence: false`"
    };
    let listed = if strong.len() > NOTE_LAYERS {
        format!("{} and {} more", strong[..NOTE_LAYERS].join(", "), strong.len() - NOTE_LAYERS)
    } else {
        strong.join(", ")
    };
    format!(
        "correlations between positions (average pooling, channel offsets, image borders) make these gradients \
         larger than the paper's independent-positions model says, by more than {STRONG_COHERENCE}x (κ): {listed}; {what}"
    )
}

/// The global pools whose output is predicted to be at least [`OFFSET_DOMINATED_POOL`] channel
/// offsets, with that share.
fn offset_dominated_pools(plan: &Plan) -> Vec<(crate::plan::StepRef<'_>, f64)> {
    plan.walk()
        .into_iter()
        .filter_map(|pool| {
            let share = global_pool_offset_share(pool.step, plan.centred_weights)?;
            (share >= OFFSET_DOMINATED_POOL).then_some((pool, share))
        })
        .collect()
}

/// Why a plan left the correlations between positions and the borders out, and what that means.
fn positions_note(plan: &Plan) -> String {
    let largest = plan
        .walk()
        .iter()
        .flat_map(|s| [s.step.input_shape, s.step.output_shape])
        .chain([plan.input])
        .filter_map(|shape| match shape {
            Shape::Image { height, width, .. } => Some((height, width)),
            Shape::Vector { .. } => None,
        })
        .max_by_key(|&(h, w)| (2 * h - 1).saturating_mul(2 * w - 1))
        .unwrap_or((1, 1));
    format!(
        "the correlations between positions and the image borders are not modelled: a {}x{} map has more offsets \
         than the {} the planner tabulates, so every γ and scalar is the paper's, which takes positions as \
         independent and alike; to see the corrections, plan the same layers on a smaller input",
        largest.0,
        largest.1,
        crate::coherence::MAX_OFFSETS,
    )
}

fn pool_note(plan: &Plan, pool: &crate::plan::StepRef<'_>, share: f64) -> String {
    let (what, fix) = if plan.centred_weights {
        let fix = if plan.varying_output_std {
            "flatten instead, or pool less"
        } else {
            "declare `varying_output_std: true` so that the output calibration counts what varies with the input, flatten instead, or pool less"
        };
        (" beside the common mean (which centred rows do not see)", fix)
    } else {
        ("", "declare `centred_weights: true`, flatten instead, or pool less")
    };
    format!(
        "{:.1}% of the second moment out of the global pool{}{what} is predicted to be channel offsets, the same for every input; such a head trained poorly in measurement (docs/coherence.md): {fix}",
        100.0 * share,
        if pool.path.is_empty() { String::new() } else { format!(" in {}", pool.path) },
    )
}

impl Plan {
    /// What the macro reports as compile-time warnings: a declaration that the calculus can plan
    /// but that is predicted to train poorly as written. Each names the layer and the fix; the
    /// same sentences are the report's notes.
    pub fn warnings(&self) -> crate::Diagnostics {
        let mut warnings = crate::Diagnostics::default();
        if !self.positions_modelled {
            warnings.push(
                crate::Rule::PositionsNotModelled,
                crate::Location::Network(crate::NetworkField::Input),
                positions_note(self),
            );
        }
        for (pool, share) in offset_dominated_pools(self) {
            let id = pool.step.layer_id().unwrap_or_default();
            warnings.push(
                crate::Rule::OffsetDominatedPool,
                crate::Location::layer(id, crate::LayerField::Kind),
                pool_note(self, &pool, share),
            );
        }
        warnings
    }
}

pub(crate) fn describe(step: &Step) -> String {
    match &step.op {
        StepOp::FixedScale { factor, reasons } => {
            let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            format!("fixed ×{} ({})", number(*factor), why.join(", "))
        }
        StepOp::Block { keyword, alpha, beta, shortcut, .. } => {
            let shortcut = if shortcut.is_empty() { ", identity shortcut" } else { "" };
            format!("{keyword} α={} β={}{shortcut}", number(*alpha), number(*beta))
        }
        StepOp::Declared { op, .. } => {
            let described = (op.def().describe)(op, step);
            match step.weight().map(|w| w.mirror) {
                Some(mirror @ (Mirror::Outputs | Mirror::Inputs | Mirror::Both)) => {
                    format!("{described} mirrored {}", mirror.name())
                }
                Some(Mirror::Unmirrored) => format!("{described} orthogonal"),
                _ => described,
            }
        }
    }
}

/// One table row per step; branches indented under their block.
fn rows_of(steps: &[Step], indent: &str, rows: &mut Vec<[String; COLUMNS]>) {
    for step in steps {
        let weight = step.weight();
        let name = if step.name.is_empty() { "·" } else { step.name.as_str() };
        rows.push([
            format!("{indent}{name}"),
            describe(step),
            step.output_shape.to_string(),
            weight.map_or(String::new(), |w| number(w.second_moment)),
            weight.map_or(String::new(), |w| number(w.numerator)),
            number(step.forward.second),
            number(step.backward),
            number(step.scaling),
            step.gamma.map_or(String::new(), number),
            step.coherence.map_or(String::new(), number),
            step.bias_gamma.map_or(String::new(), number),
            step.bias_coherence.map_or(String::new(), number),
        ]);
        if let StepOp::Block { main, shortcut, .. } = &step.op {
            let branch_indent = format!("{indent}  ");
            let header = |label: &str| {
                let mut row: [String; COLUMNS] = Default::default();
                row[0] = format!("{branch_indent}{label}:");
                row
            };
            rows.push(header("main"));
            rows_of(main, &format!("{branch_indent}  "), rows);
            if !shortcut.is_empty() {
                rows.push(header("shortcut"));
                rows_of(shortcut, &format!("{branch_indent}  "), rows);
            }
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "init {}{}, k* = {}, c = {}, input {} -> output {}, predicted output std {} (target {}{})",
            match self.weights {
                WeightLaw::Gaussian => self.init.to_string(),
                WeightLaw::Mirrored => format!("mirrored({})", self.init),
                WeightLaw::MirroredOrthogonal => "mirrored(orthogonal)".to_string(),
            },
            if self.centred_weights { " with centred rows" } else { "" },
            self.typical_kernel,
            number(self.c),
            self.input,
            self.output,
            number(if self.varying_output_std {
                self.predicted_input_dependent_std()
            } else {
                self.predicted_output_std()
            }),
            number(self.output_std),
            if self.varying_output_std {
                format!(", varying with the input; {} in all", number(self.predicted_output_std()))
            } else {
                String::new()
            }
        )?;
        let header = ["layer", "op", "output", "E[W²]", "c_l", "E[x²]", "E[dx²]", "ς", "γ", "κ", "γ_bias", "κ_bias"];
        let mut rows: Vec<[String; COLUMNS]> = vec![header.map(String::from)];
        rows.push([
            "input".into(),
            String::new(),
            self.input.to_string(),
            String::new(),
            String::new(),
            number(self.input_moments.second),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
        rows_of(&self.steps, "", &mut rows);
        let widths: Vec<usize> =
            (0..header.len()).map(|c| rows.iter().map(|row| row[c].chars().count()).max().unwrap_or(0)).collect();
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                if c <= 2 {
                    line += cell;
                    line += &" ".repeat(pad);
                } else {
                    line += &" ".repeat(pad);
                    line += cell;
                }
                line += "  ";
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        if !self.unscaled_layers.is_empty() {
            writeln!(
                f,
                "note: the rows marked `(unscaled!)` break the calculus (kept with #[allow(unscaled)]); the plan predicts them as the identity, so the numbers after them are estimates"
            )?;
        }
        if !self.positions_modelled {
            writeln!(f, "note: {}", positions_note(self))?;
        }
        let strong = strongly_coherent(self);
        if !strong.is_empty() {
            writeln!(f, "note: {}", coherence_note(self, &strong))?;
        }
        for (pool, share) in offset_dominated_pools(self) {
            writeln!(f, "note: {}", pool_note(self, &pool, share))?;
        }
        let gamma = if self.spatial_coherence {
            "with the correlations between positions"
        } else {
            "positions independent, as the paper assumes"
        };
        write!(
            f,
            "columns: layer = the prefix of the step's parameters (`conv1.weight`; unnamed layers are `<kind>_<position in the declaration>`), · for a step without; op = what the step does, `fixed ×f (why)` being a multiplier the calculus inserts; output = per-sample shape
  E[W²] = the variance the weights are drawn with; c_l = its numerator, E[W²] = c_l/(k √(n_in n_out)) with n the channel or feature counts, for geometric init (eq. 3): the header's c = 2/k* (§6.2), rescaled where the scaling factor or the corrections differ from the first layer's, which is why c_l may be far from c
  E[x²], E[dx²] = second moments of the step's output and of the gradient reaching it, for centred unit-variance input and E[dy²] = 1 at the output
  ς = the activation scaling factor n ρ² E[dx²] E[x²] (eq. 1, §4); ReLU, average pooling and fixed scalars keep it (Table 1)
  γ = the weight-to-gradient ratio E[dW²]/E[W²] (Theorem 1), {gamma}: equal γ is equal conditioning, the calculus's goal; κ = that γ over the γ of independent positions (1: no correction)
  γ_bias, κ_bias = the same for the layer's bias (eq. 7)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::number;

    #[test]
    fn numbers_keep_four_significant_digits_across_a_decade() {
        let cases = [
            (1.0, "1.000"),
            (0.99999, "1.000"),
            (9.99996, "10.00"),
            (0.0012345, "0.001234"),
            (0.00099999, "0.001000"),
            (1234.4, "1234"),
            (9999.7, "1.000e4"),
            (-0.05, "-0.05000"),
            (2.5e-7, "2.500e-7"),
            (0.0, "0"),
        ];
        for (value, expected) in cases {
            assert_eq!(number(value), expected, "{value}");
        }
    }
}
