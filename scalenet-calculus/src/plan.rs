//! From a declaration to a plan: every op of the generated network (the declared layers plus the
//! fixed scalars the calculus inserts), each weight's initial second moment, and the predicted
//! forward and backward second moments, scaling factors and gammas.

use crate::check::check;
use crate::diagnostic::Diagnostics;
use crate::moments::{self, Moments, Transfer, WeightGeometry};
use crate::spec::{InitScheme, NetworkSpec, Op, Shape};
use std::collections::BTreeMap;
use std::fmt;

/// Why the calculus inserted a fixed scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScaleReason {
    /// Before the first weight layer: `E[x0^2] = 1/sqrt(n0 k0^2)` balances its weights against its
    /// biases (section 8.1).
    Input,
    /// The weight layer's kernel differs from the typical kernel `k*` (section 6.2).
    Kernel { kernel: usize, typical: usize },
    /// Average pooling since the previous weight layer changed the second moment (section 8).
    Pooling,
    /// Zero padding of the previous weight layer lowered the second moment.
    Padding,
    /// An activation whose gain differs from the one `c` was chosen for.
    Activation,
    /// A baseline init (fan-in, fan-out, arithmetic) does not meet the bias-balance target on
    /// its own.
    InitScheme,
    /// Sets the output standard deviation to `output_std` (section 7).
    Output,
}

impl fmt::Display for ScaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleReason::Input => f.write_str("input 8.1"),
            ScaleReason::Kernel { kernel, typical } => write!(f, "k={kernel}≠k*={typical} 6.2"),
            ScaleReason::Pooling => f.write_str("pooling 8"),
            ScaleReason::Padding => f.write_str("padding"),
            ScaleReason::Activation => f.write_str("activation gain"),
            ScaleReason::InitScheme => f.write_str("init scheme"),
            ScaleReason::Output => f.write_str("output std 7"),
        }
    }
}

/// What a step of the plan does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOp {
    /// A layer as declared, at `index` in the declaration.
    Declared { index: usize, op: Op },
    /// A fixed multiplier inserted by the calculus.
    FixedScale { factor: f64, reasons: Vec<ScaleReason> },
}

/// Initialization of a convolution or linear layer.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightInit {
    /// candle-nn layout: `(out, in)` for linear, `(out, in, k, k)` for conv.
    pub shape: Vec<usize>,
    pub geometry: WeightGeometry,
    /// The geometric numerator `c_l = c sqrt(sigma_l / sigma_0)`: equal gammas need a larger `c`
    /// where the scaling factor has grown (section 11 derives `c = beta` for the same reason).
    pub numerator: f64,
    /// `E[W^2]`: the variance of the centred normal the weights are drawn from.
    pub second_moment: f64,
    pub bias: bool,
}

impl WeightInit {
    pub fn std(&self) -> f64 {
        self.second_moment.sqrt()
    }
}

/// Parameters of a step and how they start.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamInit {
    Weight(WeightInit),
    /// A learnable scalar `u` starting at `sqrt(c_l)` (Appendix E), followed by the fixed `1/sqrt(c_l)`
    /// so that it is the identity at initialization.
    Scalar {
        value: f64,
        fixed: f64,
    },
    /// A standalone bias over `channels`, zero at initialization (assumption 4).
    Bias {
        channels: usize,
    },
}

/// One op of the generated network with its predictions at initialization.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub op: StepOp,
    /// Field and parameter prefix for layers with parameters (the declared name, or
    /// `<keyword>_<index>`); the declared name or empty for the rest.
    pub name: String,
    pub input_shape: Shape,
    pub output_shape: Shape,
    pub params: Option<ParamInit>,
    /// Moments of the output for centred unit-variance input.
    pub forward: Moments,
    /// `E[dy^2]` at the output, for `E[dy^2] = 1` at the network output.
    pub backward: f64,
    /// Activation scaling factor at the output, eq. (1).
    pub scaling: f64,
    /// Weight-to-gradient ratio `E[dW^2]/E[W^2]` of the weight or scalar (= gamma, Theorem 1).
    pub gamma: Option<f64>,
    /// Bias scaling, eq. (7), where the step adds a bias.
    pub bias_gamma: Option<f64>,
}

impl Step {
    pub fn declared_index(&self) -> Option<usize> {
        match self.op {
            StepOp::Declared { index, .. } => Some(index),
            StepOp::FixedScale { .. } => None,
        }
    }

    pub fn weight(&self) -> Option<&WeightInit> {
        match &self.params {
            Some(ParamInit::Weight(weight)) => Some(weight),
            _ => None,
        }
    }
}

/// The calculus's result for one network.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub input: Shape,
    pub output: Shape,
    pub init: InitScheme,
    pub typical_kernel: usize,
    /// `2 / (1 + a^2)` for the network's activation slope `a`.
    pub gain: f64,
    /// `c = gain / k*`.
    pub c: f64,
    pub output_std: f64,
    /// Network input moments the predictions assume.
    pub input_moments: Moments,
    pub steps: Vec<Step>,
    /// Declared layers kept with `#[allow(unscaled)]`: the predictions treat them as the identity.
    pub unscaled_layers: Vec<usize>,
}

impl Plan {
    /// Predicted standard deviation of the network output.
    pub fn predicted_output_std(&self) -> f64 {
        self.steps.last().map_or(self.input_moments.std(), |step| step.forward.std())
    }

    pub fn weight_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|step| step.weight().is_some())
    }

    /// The step that implements declared layer `index`.
    pub fn step_of_layer(&self, index: usize) -> Option<&Step> {
        self.steps.iter().find(|step| step.declared_index() == Some(index))
    }
}

/// Checks `spec` and computes its plan, or returns every rule it breaks.
pub fn analyze(spec: &NetworkSpec) -> Result<Plan, Diagnostics> {
    let mut diagnostics = Diagnostics::default();
    let shapes = check(spec, &mut diagnostics);
    match (shapes, diagnostics.is_empty()) {
        (Some(shapes), true) => Ok(Planner::new(spec, &shapes).plan()),
        _ => Err(diagnostics),
    }
}

/// The most common kernel among weight layers (linear counts as 1); ties go to the smaller.
pub fn most_common_kernel(spec: &NetworkSpec) -> usize {
    let mut counts = BTreeMap::new();
    for layer in &spec.layers {
        if let Some(kernel) = layer.op.weight_kernel() {
            *counts.entry(kernel).or_insert(0usize) += 1;
        }
    }
    counts.into_iter().max_by_key(|&(kernel, count)| (count, std::cmp::Reverse(kernel))).map_or(1, |(k, _)| k)
}

/// The slope `a` whose gain `2/(1 + a^2)` `c` is chosen for: the most common among the network's
/// ReLU-family activations (ReLU is `a = 0`); ties go to ReLU. Activations with another slope get
/// a fixed scalar.
fn network_slope(spec: &NetworkSpec) -> f64 {
    let mut counts: Vec<(f64, usize)> = Vec::new();
    for layer in &spec.layers {
        let slope = match layer.op {
            Op::Relu => 0.0,
            Op::LeakyRelu { slope } => slope,
            _ => continue,
        };
        match counts.iter_mut().find(|(s, _)| *s == slope) {
            Some((_, count)) => *count += 1,
            None => counts.push((slope, 1)),
        }
    }
    counts.into_iter().fold((0.0, 0), |best, (slope, count)| if count > best.1 { (slope, count) } else { best }).0
}

/// Geometry of a weight layer from its input and output shapes.
fn weight_geometry(op: &Op, input: Shape, output: Shape) -> Option<WeightGeometry> {
    let (kernel, coverage) = match (*op, input, output) {
        (
            Op::Conv2d { kernel, stride, padding, .. },
            Shape::Image { height, width, .. },
            Shape::Image { height: out_h, width: out_w, .. },
        ) => (
            kernel,
            moments::coverage_1d(height, kernel, stride, padding, out_h)
                * moments::coverage_1d(width, kernel, stride, padding, out_w),
        ),
        (Op::Linear { .. }, _, _) => (1, 1.0),
        _ => return None,
    };
    Some(WeightGeometry {
        fan_in: input.channels(),
        fan_out: output.channels(),
        kernel,
        area_in: input.area(),
        area_out: output.area(),
        coverage,
    })
}

/// `E[W^2]` of a weight layer under `scheme` (eqs. 3-5).
pub fn weight_second_moment(scheme: InitScheme, geometry: &WeightGeometry, numerator: f64, gain: f64) -> f64 {
    let (n_in, n_out) = (geometry.fan_in as f64, geometry.fan_out as f64);
    let k = geometry.kernel as f64;
    match scheme {
        InitScheme::Geometric => numerator / (k * (n_in * n_out).sqrt()),
        InitScheme::FanIn => gain / (n_in * k * k),
        InitScheme::FanOut => gain / (n_out * k * k),
        InitScheme::Arithmetic => gain / (0.5 * (n_in + n_out) * k * k),
    }
}

struct Planner<'a> {
    spec: &'a NetworkSpec,
    shapes: &'a [Shape],
    typical_kernel: usize,
    slope: f64,
    gain: f64,
    c: f64,
}

/// A fixed scalar to insert before declared layer `before` (`layers.len()`: at the end).
struct Insertion {
    before: usize,
    factor: f64,
    reasons: Vec<ScaleReason>,
}

impl<'a> Planner<'a> {
    fn new(spec: &'a NetworkSpec, shapes: &'a [Shape]) -> Self {
        let typical_kernel = spec.typical_kernel.unwrap_or_else(|| most_common_kernel(spec));
        let slope = network_slope(spec);
        let gain = 2.0 / (1.0 + slope * slope);
        Planner { spec, shapes, typical_kernel, slope, gain, c: gain / typical_kernel as f64 }
    }

    fn input_shape(&self, index: usize) -> Shape {
        if index == 0 {
            self.spec.input.expect("checked")
        } else {
            self.shapes[index - 1]
        }
    }

    fn numel(&self, index: usize) -> usize {
        self.input_shape(index).numel()
    }

    /// First pass, on the *nominal* chain (the declaration without the user's own `scale` factors
    /// and with dropout as in evaluation): choose each weight layer's init and the fixed scalars.
    ///
    /// One rule gives every fixed scalar. Biases are balanced against weights when, at every weight
    /// layer output, `n E[y^2]^2 = c_l^2` (eqs. 7-8 with gamma = sigma/c_l^2): so the calculus puts
    /// one scalar before each weight layer that brings its output to `E[y^2] = c_l / sqrt(n_out)`.
    /// Before the first layer this is the input scalar `1/(n0 k0^2)^(1/4)` of section 8.1; before a
    /// layer whose kernel is not `k*` it is `sqrt(k*/k)` of section 6.2; after average pooling it
    /// undoes the pooling (section 8). A last scalar sets the output std (section 7).
    fn decide(&self) -> (Vec<Option<WeightInit>>, Vec<Insertion>) {
        let layers = &self.spec.layers;
        let mut weights = vec![None; layers.len()];
        let mut insertions = Vec::new();
        let mut nominal = Moments::centred(1.0);
        let mut relative_scaling = 1.0f64;
        let mut seen_weight_layer = false;
        let mut pooled = false;
        let mut padded = false;
        let mut activation_mismatch = false;
        for (index, layer) in layers.iter().enumerate() {
            let (input, output) = (self.input_shape(index), self.shapes[index]);
            let transfer = match layer.op {
                Op::Conv2d { bias, .. } | Op::Linear { bias, .. } => {
                    let geometry = weight_geometry(&layer.op, input, output).expect("weight layer");
                    let numerator = self.c * relative_scaling.sqrt();
                    let second_moment = weight_second_moment(self.spec.init, &geometry, numerator, self.gain);
                    let target = numerator / (geometry.fan_out as f64).sqrt();
                    let produced = moments::weight_layer(nominal, &geometry, second_moment).output.second;
                    let factor = (target / produced).sqrt();
                    if self.spec.fixed_scalars && (factor - 1.0).abs() > 1e-9 {
                        let mut reasons = Vec::new();
                        if !seen_weight_layer {
                            reasons.push(ScaleReason::Input);
                        }
                        if geometry.kernel != self.typical_kernel {
                            reasons.push(ScaleReason::Kernel { kernel: geometry.kernel, typical: self.typical_kernel });
                        }
                        if pooled {
                            reasons.push(ScaleReason::Pooling);
                        }
                        if padded {
                            reasons.push(ScaleReason::Padding);
                        }
                        if activation_mismatch {
                            reasons.push(ScaleReason::Activation);
                        }
                        if self.spec.init != InitScheme::Geometric && seen_weight_layer {
                            reasons.push(ScaleReason::InitScheme);
                        }
                        // A standalone bias or a flatten right before the layer sees the corrected moment too.
                        let mut before = index;
                        while before > 0 && matches!(layers[before - 1].op, Op::Bias | Op::Flatten) {
                            before -= 1;
                        }
                        insertions.push(Insertion { before, factor, reasons });
                        nominal = nominal.scaled(factor);
                    }
                    weights[index] = Some(WeightInit {
                        shape: match layer.op {
                            Op::Conv2d { kernel, .. } => {
                                vec![geometry.fan_out, geometry.fan_in, kernel, kernel]
                            }
                            _ => vec![geometry.fan_out, geometry.fan_in],
                        },
                        geometry,
                        numerator,
                        second_moment,
                        bias,
                    });
                    seen_weight_layer = true;
                    pooled = false;
                    activation_mismatch = false;
                    padded = geometry.coverage < 1.0;
                    moments::weight_layer(nominal, &geometry, second_moment)
                }
                // The user's factors and dropout are left out of the nominal chain, so no inserted
                // scalar cancels them; only their sign matters to the ReLUs that follow.
                Op::Scale { factor } => Transfer::scale(nominal, factor.signum()),
                _ => {
                    if let Op::LeakyRelu { slope } = layer.op {
                        activation_mismatch |= slope != self.slope;
                    }
                    if layer.op == Op::Relu {
                        activation_mismatch |= self.slope != 0.0;
                    }
                    pooled |= matches!(layer.op, Op::AvgPool2d { .. });
                    self.transfer(index, nominal, None)
                }
            };
            relative_scaling *= moments::scaling_ratio(&nominal, self.numel(index), &transfer, output.numel());
            nominal = transfer.output;
        }
        if self.spec.fixed_scalars {
            let factor = self.spec.output_std / nominal.std();
            if factor.is_finite() && (factor - 1.0).abs() > 1e-9 {
                insertions.push(Insertion { before: layers.len(), factor, reasons: vec![ScaleReason::Output] });
            }
        }
        (weights, insertions)
    }

    /// Moments through declared layer `index` (weight layers need their init).
    fn transfer(&self, index: usize, input: Moments, weight: Option<&WeightInit>) -> Transfer {
        match self.spec.layers[index].op {
            Op::Conv2d { .. } | Op::Linear { .. } => {
                let weight = weight.expect("weight layers are planned");
                moments::weight_layer(input, &weight.geometry, weight.second_moment)
            }
            Op::AvgPool2d { kernel, .. } => moments::avg_pool(input, kernel),
            Op::Relu => moments::leaky_relu(input, 0.0),
            Op::LeakyRelu { slope } => moments::leaky_relu(input, slope),
            Op::Scale { factor } => Transfer::scale(input, factor),
            // Evaluation-mode dropout is the identity; in training, inverted dropout multiplies both
            // second moments by 1/(1-p), which leaves sigma unchanged and every gamma scaled alike.
            Op::Dropout { .. } => Transfer::identity(input),
            // Zero-initialized bias, scalar that starts as the identity, reshaping.
            Op::Bias | Op::Scalar | Op::Flatten => Transfer::identity(input),
            // Kept with #[allow(unscaled)]: modelled by its linear regime, and flagged.
            Op::Unscaled(_) => Transfer::identity(input),
            Op::MaxPool2d { .. } | Op::Normalization(_) => unreachable!("rejected by check"),
        }
    }

    fn plan(self) -> Plan {
        let (weights, insertions) = self.decide();
        let input = self.spec.input.expect("checked");
        let input_moments = Moments::centred(1.0);

        // Second pass: the real chain, with the inserted scalars and the user's factors.
        let mut steps = Vec::new();
        let mut pending = insertions.iter().peekable();
        let mut current = input_moments;
        let mut relative_scaling = 1.0f64;
        let mut transfers = Vec::new();
        for index in 0..=self.spec.layers.len() {
            // Before layer `index`; past the last layer this is the network's output shape.
            let shape = self.input_shape(index);
            while let Some(insertion) = pending.next_if(|insertion| insertion.before == index) {
                let transfer = Transfer::scale(current, insertion.factor);
                steps.push(self.step(
                    StepOp::FixedScale { factor: insertion.factor, reasons: insertion.reasons.clone() },
                    String::new(),
                    shape,
                    shape,
                    None,
                    transfer.output,
                ));
                transfers.push((transfer, current));
                current = transfer.output;
            }
            let Some(layer) = self.spec.layers.get(index) else {
                break;
            };
            let output = self.shapes[index];
            let weight = weights[index].as_ref();
            let transfer = match layer.op {
                Op::Scalar => Transfer::identity(current),
                _ => self.transfer(index, current, weight),
            };
            relative_scaling *= moments::scaling_ratio(&current, shape.numel(), &transfer, output.numel());
            let params = match layer.op {
                Op::Conv2d { .. } | Op::Linear { .. } => weight.cloned().map(ParamInit::Weight),
                Op::Scalar => {
                    let numerator = self.c * relative_scaling.sqrt();
                    Some(ParamInit::Scalar { value: numerator.sqrt(), fixed: 1.0 / numerator.sqrt() })
                }
                Op::Bias => Some(ParamInit::Bias { channels: shape.channels() }),
                _ => None,
            };
            let name = match &layer.name {
                Some(name) => name.clone(),
                None if layer.op.has_parameters() => format!("{}_{index}", layer.op.keyword()),
                None => String::new(),
            };
            steps.push(self.step(
                StepOp::Declared { index, op: layer.op },
                name,
                shape,
                output,
                params,
                transfer.output,
            ));
            transfers.push((transfer, current));
            current = transfer.output;
        }

        // Backward: batch-size-1 semantics with E[dy^2] = 1 at the output (loss = y . N, N ~ N(0, I)).
        let mut gradient = 1.0;
        for (step, (transfer, _)) in steps.iter_mut().zip(&transfers).rev() {
            step.backward = gradient;
            step.scaling = step.output_shape.numel() as f64 * gradient * step.forward.second;
            gradient *= transfer.backward_gain;
        }
        for (step, (_, step_input)) in steps.iter_mut().zip(&transfers) {
            let dy = step.backward;
            match &step.params {
                Some(ParamInit::Weight(weight)) => {
                    let g = &weight.geometry;
                    let weight_gradient = g.area_out as f64 * g.coverage * step_input.second * dy;
                    step.gamma = Some(weight_gradient / weight.second_moment);
                    if weight.bias {
                        step.bias_gamma = Some(g.area_out as f64 * dy / step.forward.second);
                    }
                }
                Some(ParamInit::Scalar { value, fixed }) => {
                    let scalar_gradient = fixed * fixed * step.input_shape.numel() as f64 * step_input.second * dy;
                    step.gamma = Some(scalar_gradient / (value * value));
                }
                Some(ParamInit::Bias { .. }) => {
                    step.bias_gamma = Some(step.output_shape.area() as f64 * dy / step.forward.second);
                }
                None => {}
            }
        }

        let unscaled_layers = (self.spec.layers.iter().enumerate())
            .filter(|(_, layer)| matches!(layer.op, Op::Unscaled(_)))
            .map(|(index, _)| index)
            .collect();
        Plan {
            input,
            output: self.shapes.last().copied().unwrap_or(input),
            init: self.spec.init,
            typical_kernel: self.typical_kernel,
            gain: self.gain,
            c: self.c,
            output_std: self.spec.output_std,
            input_moments,
            steps,
            unscaled_layers,
        }
    }

    fn step(
        &self,
        op: StepOp,
        name: String,
        input: Shape,
        output: Shape,
        params: Option<ParamInit>,
        forward: Moments,
    ) -> Step {
        Step {
            op,
            name,
            input_shape: input,
            output_shape: output,
            params,
            forward,
            backward: 0.0,
            scaling: 0.0,
            gamma: None,
            bias_gamma: None,
        }
    }
}
