//! The coordinate check (a width sweep, as mup users know it): the same network at several
//! widths, each measured with [`measure`](super::measure), one line per layer.

use super::Diagnosis;

/// Per-step measurements of one network family at several widths.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CoordinateCheck {
    /// The network family, by name.
    pub network: String,
    /// The widths measured, in order.
    pub widths: Vec<usize>,
    /// One per top-level step, in order: `layer` (or `op` for steps without parameters).
    pub steps: Vec<String>,
    /// `[step][width]` measured `E[x^2]` of the step's output.
    pub forward: Vec<Vec<f64>>,
    /// `[step][width]` the calculus's `E[x^2]`.
    pub forward_predicted: Vec<Vec<f64>>,
    /// `[step][width]` measured activation scaling factor, eq. (1).
    pub scaling: Vec<Vec<f64>>,
    /// `[weight step][width]` measured weight-to-gradient ratio (Theorem 1), with its step's label.
    pub gamma: Vec<(String, Vec<f64>)>,
    /// `[weight step][width]` the calculus's gamma, in the order of `gamma`.
    pub gamma_predicted: Vec<Vec<f64>>,
}

/// Why a set of diagnoses is not one width sweep.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoordinateError {
    #[error("a coordinate check needs at least two widths, got {0}")]
    TooFewWidths(usize),
    #[error("width {width} has {found} steps where width {first} has {expected}: sweep one network family")]
    StepsDiffer { first: usize, expected: usize, width: usize, found: usize },
}

impl CoordinateCheck {
    /// Gathers the diagnoses of one network at several widths (`(width, diagnosis)`, any order).
    pub fn new(network: &str, mut sweep: Vec<(usize, Diagnosis)>) -> Result<Self, CoordinateError> {
        if sweep.len() < 2 {
            return Err(CoordinateError::TooFewWidths(sweep.len()));
        }
        sweep.sort_by_key(|(width, _)| *width);
        let (first, reference) = (&sweep[0].0, &sweep[0].1);
        for (width, diagnosis) in &sweep {
            if diagnosis.steps.len() != reference.steps.len() {
                return Err(CoordinateError::StepsDiffer {
                    first: *first,
                    expected: reference.steps.len(),
                    width: *width,
                    found: diagnosis.steps.len(),
                });
            }
        }
        let steps: Vec<String> = reference
            .steps
            .iter()
            .map(|s| if s.layer.is_empty() { format!("{} {}", s.step, s.op) } else { s.layer.clone() })
            .collect();
        let per_step = |pick: &dyn Fn(&super::StepDiagnosis) -> f64| -> Vec<Vec<f64>> {
            (0..steps.len()).map(|i| sweep.iter().map(|(_, d)| pick(&d.steps[i])).collect()).collect()
        };
        let gamma = reference
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.gamma.is_some())
            .map(|(i, _)| {
                let values = sweep.iter().map(|(_, d)| d.steps[i].gamma.map_or(f64::NAN, |g| g.measured)).collect();
                (steps[i].clone(), values)
            })
            .collect();
        let gamma_predicted = reference
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.gamma.is_some())
            .map(|(i, _)| sweep.iter().map(|(_, d)| d.steps[i].gamma.map_or(f64::NAN, |g| g.predicted)).collect())
            .collect();
        Ok(CoordinateCheck {
            gamma_predicted,
            network: network.to_string(),
            widths: sweep.iter().map(|(w, _)| *w).collect(),
            forward: per_step(&|s| s.forward.measured),
            forward_predicted: per_step(&|s| s.forward.predicted),
            scaling: per_step(&|s| s.scaling.measured),
            gamma,
            steps,
        })
    }

    /// For each weight layer, the largest over the smallest measured gamma across widths: 1 when
    /// the layer's conditioning does not depend on width.
    pub fn gamma_drift(&self) -> Vec<(String, f64)> {
        self.gamma.iter().map(|(name, values)| (name.clone(), spread(values))).collect()
    }

    /// Largest over smallest measured gamma over all layers and widths.
    pub fn gamma_spread(&self) -> f64 {
        spread(&self.gamma.iter().flat_map(|(_, v)| v.iter().copied()).collect::<Vec<_>>())
    }

    /// The sweep as CSV, one row per (quantity, step, width).
    pub fn to_csv(&self) -> String {
        let mut csv = String::from("quantity,step,width,value\n");
        let mut rows = |quantity: &str, step: &str, values: &[f64]| {
            for (width, value) in self.widths.iter().zip(values) {
                csv.push_str(&format!("{quantity},{step},{width},{value:e}\n"));
            }
        };
        for (i, step) in self.steps.iter().enumerate() {
            rows("forward", step, &self.forward[i]);
            rows("forward_predicted", step, &self.forward_predicted[i]);
            rows("scaling", step, &self.scaling[i]);
        }
        for ((step, values), predicted) in self.gamma.iter().zip(&self.gamma_predicted) {
            rows("gamma", step, values);
            rows("gamma_predicted", step, predicted);
        }
        csv
    }
}

/// Largest over smallest of finite positive values (1 for none).
pub(crate) fn spread(values: &[f64]) -> f64 {
    let finite = values.iter().copied().filter(|v| v.is_finite() && *v > 0.0);
    let (min, max) = finite.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if max < min {
        1.0
    } else {
        max / min
    }
}
