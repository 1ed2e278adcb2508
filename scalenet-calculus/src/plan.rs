//! From a declaration to a plan: every op of the generated network (the declared layers plus the
//! fixed scalars the calculus inserts), each weight's initial second moment, and the predicted
//! forward and backward second moments, scaling factors and gammas.

use crate::check::{check, Node, NodeKind};
use crate::diagnostic::Diagnostics;
use crate::moments::{self, Moments, Transfer, WeightGeometry};
use crate::spec::{InitScheme, LayerSpec, NetworkSpec, Op, Shape};
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
    /// Inside a residual branch, whose weights use `c beta` or `c alpha` (section 11).
    Branch,
    /// At the end of a residual branch: `E[F(x)^2] = E[x^2]` (section 11).
    BranchEnd,
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
            ScaleReason::Branch => f.write_str("branch c 11"),
            ScaleReason::BranchEnd => f.write_str("E[F²]=E[x²] 11"),
            ScaleReason::Output => f.write_str("output std 7"),
        }
    }
}

/// What a step of the plan does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOp {
    /// A layer as declared (or as a bottleneck spells it out), `index` in pre-order.
    Declared { index: usize, op: Op },
    /// A fixed multiplier inserted by the calculus.
    FixedScale { factor: f64, reasons: Vec<ScaleReason> },
    /// `alpha S(x) + beta F(x)`; an empty shortcut is the identity.
    Block { index: usize, keyword: &'static str, alpha: f64, beta: f64, main: Vec<Step>, shortcut: Vec<Step> },
}

/// Initialization of a convolution or linear layer.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightInit {
    /// candle-nn layout: `(out, in)` for linear, `(out, in, k, k)` for conv.
    pub shape: Vec<usize>,
    pub geometry: WeightGeometry,
    /// The geometric numerator `c_l = c sqrt(sigma_l / sigma_0)`: equal gammas need a larger `c`
    /// where the scaling factor has grown and a smaller one where it has shrunk, as inside a
    /// residual branch (section 11 derives `c = beta` the same way).
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
    /// A learnable scalar `u` starting at `sqrt(c_l)` (Appendix E), followed by the fixed
    /// `1/sqrt(c_l)` so that it is the identity at initialization.
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
    /// The name within its chain: the declared name, `<keyword>_<index>` for unnamed layers with
    /// parameters and blocks, empty for the rest. [`Plan::walk`] gives full parameter paths.
    pub name: String,
    pub input_shape: Shape,
    pub output_shape: Shape,
    pub params: Option<ParamInit>,
    /// Moments of the input, for centred unit-variance network input.
    pub input: Moments,
    /// Moments of the output.
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
    fn new(op: StepOp, name: String, input_shape: Shape, output_shape: Shape, params: Option<ParamInit>) -> Self {
        let unset = Moments::centred(0.0);
        Step {
            op,
            name,
            input_shape,
            output_shape,
            params,
            input: unset,
            forward: unset,
            backward: 0.0,
            scaling: 0.0,
            gamma: None,
            bias_gamma: None,
        }
    }

    pub fn declared_index(&self) -> Option<usize> {
        match self.op {
            StepOp::Declared { index, .. } | StepOp::Block { index, .. } => Some(index),
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

/// A step with its place in the network.
#[derive(Debug, Clone, Copy)]
pub struct StepRef<'a> {
    /// Parameter prefix, `conv1` or `res1.main.conv_3`; for steps without a name, the enclosing
    /// block's path.
    pub path: &'a str,
    /// Blocks enclosing the step.
    pub depth: usize,
    pub step: &'a Step,
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
    /// Parameter path of every step, in [`Plan::walk`] order.
    paths: Vec<String>,
}

impl Plan {
    /// Predicted standard deviation of the network output.
    pub fn predicted_output_std(&self) -> f64 {
        self.steps.last().map_or(self.input_moments.std(), |step| step.forward.std())
    }

    /// Every step, blocks before their branches (main, then shortcut), with its parameter path.
    pub fn walk(&self) -> Vec<StepRef<'_>> {
        fn visit<'a>(steps: &'a [Step], depth: usize, out: &mut Vec<(usize, &'a Step)>) {
            for step in steps {
                out.push((depth, step));
                if let StepOp::Block { main, shortcut, .. } = &step.op {
                    visit(main, depth + 1, out);
                    visit(shortcut, depth + 1, out);
                }
            }
        }
        let mut steps = Vec::new();
        visit(&self.steps, 0, &mut steps);
        steps.into_iter().zip(&self.paths).map(|((depth, step), path)| StepRef { path, depth, step }).collect()
    }

    /// Steps with a convolution or linear weight, in network order.
    pub fn weight_steps(&self) -> impl Iterator<Item = StepRef<'_>> {
        self.walk().into_iter().filter(|s| s.step.weight().is_some())
    }

    /// The step of the layer with parameter path `path` (e.g. `conv1`, `res1.main.conv_3`).
    pub fn step(&self, path: &str) -> Option<&Step> {
        self.walk().into_iter().find(|s| s.path == path && !s.step.name.is_empty()).map(|s| s.step)
    }

    /// The step that implements declared layer `index` (pre-order).
    pub fn step_of_layer(&self, index: usize) -> Option<&Step> {
        self.walk().into_iter().map(|s| s.step).find(|step| step.declared_index() == Some(index))
    }
}

/// Checks `spec` and computes its plan, or returns every rule it breaks.
pub fn analyze(spec: &NetworkSpec) -> Result<Plan, Diagnostics> {
    let mut diagnostics = Diagnostics::default();
    let nodes = check(spec, &mut diagnostics);
    match (nodes, diagnostics.is_empty()) {
        (Some(nodes), true) => Ok(Planner::new(spec).plan(&nodes)),
        _ => Err(diagnostics),
    }
}

fn visit_layers<'a>(layers: &'a [LayerSpec], visit: &mut impl FnMut(&'a LayerSpec)) {
    for layer in layers {
        visit(layer);
        if let Op::Residual(block) = &layer.op {
            visit_layers(&block.main, visit);
            visit_layers(block.shortcut.as_deref().unwrap_or_default(), visit);
        }
    }
}

/// The most common kernel among weight layers (linear counts as 1; a bottleneck's 1x1 count
/// twice, its 3x3 once); ties go to the smaller.
pub fn most_common_kernel(spec: &NetworkSpec) -> usize {
    let mut counts = BTreeMap::new();
    visit_layers(&spec.layers, &mut |layer| match layer.op {
        Op::Bottleneck { .. } => {
            *counts.entry(1).or_insert(0usize) += 2;
            *counts.entry(3).or_insert(0usize) += 1;
        }
        _ => {
            if let Some(kernel) = layer.op.weight_kernel() {
                *counts.entry(kernel).or_insert(0usize) += 1;
            }
        }
    });
    counts.into_iter().max_by_key(|&(kernel, count)| (count, std::cmp::Reverse(kernel))).map_or(1, |(k, _)| k)
}

/// The slope `a` whose gain `2/(1 + a^2)` `c` is chosen for: the most common among the network's
/// ReLU-family activations (ReLU is `a = 0`); ties go to ReLU. Activations with another slope get
/// a fixed scalar.
fn network_slope(spec: &NetworkSpec) -> f64 {
    let mut counts: Vec<(f64, usize)> = Vec::new();
    let mut count = |slope: f64, n: usize| match counts.iter_mut().find(|(s, _)| *s == slope) {
        Some((_, total)) => *total += n,
        None => counts.push((slope, n)),
    };
    visit_layers(&spec.layers, &mut |layer| match layer.op {
        Op::Relu => count(0.0, 1),
        Op::LeakyRelu { slope } => count(slope, 1),
        Op::Bottleneck { .. } => count(0.0, 3),
        _ => {}
    });
    counts.into_iter().fold((0.0, 0), |best, (slope, n)| if n > best.1 { (slope, n) } else { best }).0
}

/// Geometry of a weight layer from its input and output shapes.
fn weight_geometry(op: &Op, input: Shape, output: Shape) -> Option<WeightGeometry> {
    let (kernel, coverage) = match (op, input, output) {
        (
            &Op::Conv2d { kernel, stride, padding, .. },
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

/// `alpha S + beta F` of independent branches.
fn combine(alpha: f64, shortcut: Moments, beta: f64, main: Moments) -> Moments {
    let cross = 2.0 * alpha * beta * shortcut.mean * main.mean;
    Moments {
        second: alpha * alpha * shortcut.second + beta * beta * main.second + cross,
        mean: alpha * shortcut.mean + beta * main.mean,
        coherent: alpha * alpha * shortcut.coherent + beta * beta * main.coherent + cross,
        nonnegative: shortcut.nonnegative && main.nonnegative,
    }
}

/// How the moments through a step are computed.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// The real network.
    Actual,
    /// Without the user's own `scale` factors (only their sign): the chain the inserted scalars
    /// are computed on, so that no inserted scalar cancels a factor the user asked for.
    Nominal,
}

/// Moments through one step.
fn transfer(step: &Step, input: Moments, mode: Mode) -> Transfer {
    match &step.op {
        StepOp::FixedScale { factor, .. } => Transfer::scale(input, *factor),
        StepOp::Block { alpha, beta, main, shortcut, .. } => {
            let (main_out, main_gain) = chain_transfer(main, input, mode);
            let (shortcut_out, shortcut_gain) = chain_transfer(shortcut, input, mode);
            Transfer {
                output: combine(*alpha, shortcut_out, *beta, main_out),
                backward_gain: alpha * alpha * shortcut_gain + beta * beta * main_gain,
            }
        }
        StepOp::Declared { op, .. } => match *op {
            Op::Conv2d { .. } | Op::Linear { .. } => {
                let weight = step.weight().expect("weight layers carry their init");
                moments::weight_layer(input, &weight.geometry, weight.second_moment)
            }
            Op::AvgPool2d { kernel, .. } => moments::avg_pool(input, kernel),
            Op::Relu => moments::leaky_relu(input, 0.0),
            Op::LeakyRelu { slope } => moments::leaky_relu(input, slope),
            Op::Scale { factor } => {
                Transfer::scale(input, if mode == Mode::Nominal { factor.signum() } else { factor })
            }
            // Evaluation-mode dropout is the identity; in training, inverted dropout multiplies
            // both second moments by 1/(1-p), which leaves sigma unchanged and scales every gamma alike.
            Op::Dropout { .. } => Transfer::identity(input),
            // Zero-initialized bias, scalar that starts as the identity.
            Op::Bias | Op::Scalar => Transfer::identity(input),
            Op::Flatten => Transfer::identity(input.as_vector()),
            // Kept with #[allow(unscaled)]: modelled by its linear regime, and flagged.
            Op::Unscaled(_) => Transfer::identity(input),
            Op::MaxPool2d { .. } | Op::Normalization(_) | Op::Residual(_) | Op::Bottleneck { .. } => {
                unreachable!("rejected by check or resolved into blocks")
            }
        },
    }
}

/// Output moments of a chain and its backward gain `E[dx^2]/E[dy^2]`.
fn chain_transfer(steps: &[Step], input: Moments, mode: Mode) -> (Moments, f64) {
    steps.iter().fold((input, 1.0), |(moments, gain), step| {
        let t = transfer(step, moments, mode);
        (t.output, gain * t.backward_gain)
    })
}

/// What the scalars inserted so far in a chain have to say about the next one.
#[derive(Clone, Copy, Default)]
struct Since {
    seen_weight_layer: bool,
    pooled: bool,
    padded: bool,
    activation_mismatch: bool,
    in_branch: bool,
}

struct Planner<'a> {
    spec: &'a NetworkSpec,
    typical_kernel: usize,
    slope: f64,
    gain: f64,
    c: f64,
}

impl<'a> Planner<'a> {
    fn new(spec: &'a NetworkSpec) -> Self {
        let typical_kernel = spec.typical_kernel.unwrap_or_else(|| most_common_kernel(spec));
        let slope = network_slope(spec);
        let gain = 2.0 / (1.0 + slope * slope);
        Planner { spec, typical_kernel, slope, gain, c: gain / typical_kernel as f64 }
    }

    /// Inserts a fixed scalar at the end of `steps`, or before a weight layer about to be added:
    /// then before the standalone biases and flattens that precede it, so they see the corrected
    /// moment too. Returns whether a scalar was needed.
    fn insert_scalar(
        &self,
        steps: &mut Vec<Step>,
        factor: f64,
        reasons: Vec<ScaleReason>,
        shape: Shape,
        before_weight: bool,
    ) -> bool {
        if !self.spec.fixed_scalars || !factor.is_finite() || (factor - 1.0).abs() <= 1e-9 {
            return false;
        }
        let mut at = steps.len();
        while before_weight && at > 0 && matches!(steps[at - 1].op, StepOp::Declared { op: Op::Bias | Op::Flatten, .. })
        {
            at -= 1;
        }
        let shape = steps.get(at).map_or(shape, |s| s.input_shape);
        steps.insert(at, Step::new(StepOp::FixedScale { factor, reasons }, String::new(), shape, shape, None));
        true
    }

    /// Pass 1, on the nominal chain: builds the steps of `nodes`, choosing each weight layer's init
    /// and the fixed scalars. `relative_scaling` is `sigma / sigma_0` at the chain's input.
    ///
    /// One rule gives every fixed scalar. Biases are balanced against weights when, at every
    /// weight layer output, `n E[y^2]^2 = c_l^2` (eqs. 7-8 with gamma = sigma/c_l^2): so the
    /// calculus puts one scalar before each weight layer that brings its output to
    /// `E[y^2] = c_l / sqrt(n_out)`. Before the first layer this is the input scalar
    /// `1/(n0 k0^2)^(1/4)` of section 8.1; before a layer whose kernel is not `k*` it is
    /// `sqrt(k*/k)` of section 6.2; after average pooling it undoes the pooling (section 8).
    fn build_chain(
        &self,
        nodes: &[Node],
        nominal: &mut Moments,
        relative_scaling: &mut f64,
        since: &mut Since,
    ) -> Vec<Step> {
        let mut steps: Vec<Step> = Vec::with_capacity(nodes.len());
        for node in nodes {
            let name = match (&node.name, &node.kind) {
                (Some(name), _) => name.clone(),
                (None, NodeKind::Block { keyword, .. }) => format!("{keyword}_{}", node.index),
                (None, NodeKind::Leaf(op)) if op.has_parameters() => format!("{}_{}", op.keyword(), node.index),
                (None, _) => String::new(),
            };
            let step = match &node.kind {
                NodeKind::Block { keyword, alpha, beta, main, shortcut } => {
                    let entry = *nominal;
                    // sigma_B / sigma at the block input through each branch, a scale-free product
                    // of op ratios (1 unless pooling follows a ReLU), measured by a dry build.
                    let ratio_through = |nodes: &[Node]| {
                        let mut ratio = 1.0;
                        self.build_chain(
                            nodes,
                            &mut entry.clone(),
                            &mut ratio,
                            &mut Since { in_branch: true, ..*since },
                        );
                        ratio
                    };
                    let (main_ratio, shortcut_ratio) = (ratio_through(main), ratio_through(shortcut));
                    // sigma at the block output: the gradients of both branches add (Appendix B).
                    let output_scaling =
                        *relative_scaling / (alpha * alpha / shortcut_ratio + beta * beta / main_ratio);
                    let mut branch = |nodes: &[Node], weight: f64, ratio: f64| {
                        let mut moments = entry;
                        // A branch carries the share weight^2 of sigma at the sum (section 11).
                        let mut scaling = if self.spec.branch_scaling {
                            output_scaling * weight * weight / ratio
                        } else {
                            *relative_scaling
                        };
                        let mut branch_since = Since { in_branch: true, ..*since };
                        let mut steps = self.build_chain(nodes, &mut moments, &mut scaling, &mut branch_since);
                        if !nodes.is_empty() {
                            let factor = (entry.second / moments.second).sqrt();
                            let shape = nodes.last().expect("nonempty").output;
                            self.insert_scalar(&mut steps, factor, vec![ScaleReason::BranchEnd], shape, false);
                        }
                        since.seen_weight_layer |= branch_since.seen_weight_layer;
                        steps
                    };
                    let main_steps = branch(main, *beta, main_ratio);
                    let shortcut_steps = branch(shortcut, *alpha, shortcut_ratio);
                    Step::new(
                        StepOp::Block {
                            index: node.index,
                            keyword,
                            alpha: *alpha,
                            beta: *beta,
                            main: main_steps,
                            shortcut: shortcut_steps,
                        },
                        name,
                        node.input,
                        node.output,
                        None,
                    )
                }
                NodeKind::Leaf(op) => {
                    let params = match op {
                        Op::Conv2d { bias, .. } | Op::Linear { bias, .. } => {
                            let geometry = weight_geometry(op, node.input, node.output).expect("weight layer");
                            let numerator = self.c * relative_scaling.sqrt();
                            let second_moment = weight_second_moment(self.spec.init, &geometry, numerator, self.gain);
                            let target = numerator / (geometry.fan_out as f64).sqrt();
                            let produced = moments::weight_layer(*nominal, &geometry, second_moment).output.second;
                            let mut reasons = Vec::new();
                            if !since.seen_weight_layer {
                                reasons.push(ScaleReason::Input);
                            }
                            if geometry.kernel != self.typical_kernel {
                                reasons.push(ScaleReason::Kernel {
                                    kernel: geometry.kernel,
                                    typical: self.typical_kernel,
                                });
                            }
                            for (flag, reason) in [
                                (since.pooled, ScaleReason::Pooling),
                                (since.padded, ScaleReason::Padding),
                                (since.activation_mismatch, ScaleReason::Activation),
                                (since.in_branch, ScaleReason::Branch),
                                (
                                    self.spec.init != InitScheme::Geometric && since.seen_weight_layer,
                                    ScaleReason::InitScheme,
                                ),
                            ] {
                                if flag {
                                    reasons.push(reason);
                                }
                            }
                            let factor = (target / produced).sqrt();
                            if self.insert_scalar(&mut steps, factor, reasons, node.input, true) {
                                *nominal = nominal.scaled(factor);
                            }
                            *since = Since {
                                seen_weight_layer: true,
                                padded: geometry.coverage < 1.0,
                                in_branch: since.in_branch,
                                ..Since::default()
                            };
                            Some(ParamInit::Weight(WeightInit {
                                shape: match op {
                                    Op::Conv2d { kernel, .. } => {
                                        vec![geometry.fan_out, geometry.fan_in, *kernel, *kernel]
                                    }
                                    _ => vec![geometry.fan_out, geometry.fan_in],
                                },
                                geometry,
                                numerator,
                                second_moment,
                                bias: *bias,
                            }))
                        }
                        Op::Scalar => {
                            let numerator = self.c * relative_scaling.sqrt();
                            Some(ParamInit::Scalar { value: numerator.sqrt(), fixed: 1.0 / numerator.sqrt() })
                        }
                        Op::Bias => Some(ParamInit::Bias { channels: node.input.channels() }),
                        Op::LeakyRelu { slope } => {
                            since.activation_mismatch |= *slope != self.slope;
                            None
                        }
                        Op::Relu => {
                            since.activation_mismatch |= self.slope != 0.0;
                            None
                        }
                        Op::AvgPool2d { .. } => {
                            since.pooled = true;
                            None
                        }
                        _ => None,
                    };
                    Step::new(
                        StepOp::Declared { index: node.index, op: op.clone() },
                        name,
                        node.input,
                        node.output,
                        params,
                    )
                }
            };
            let t = transfer(&step, *nominal, Mode::Nominal);
            *relative_scaling *= moments::scaling_ratio(nominal, node.input.numel(), &t, node.output.numel());
            *nominal = t.output;
            steps.push(step);
        }
        steps
    }

    fn plan(self, nodes: &[Node]) -> Plan {
        let input = self.spec.input.expect("checked");
        let output = nodes.last().map_or(input, |n| n.output);
        let input_moments = Moments::centred(1.0);
        let mut nominal = input_moments;
        let mut steps = self.build_chain(nodes, &mut nominal, &mut 1.0, &mut Since::default());
        self.insert_scalar(&mut steps, self.spec.output_std / nominal.std(), vec![ScaleReason::Output], output, false);

        // Pass 2: the real chain, forward then backward (batch-size-1 semantics: E[dy^2] = 1 at
        // the output, as for loss = y . N with N ~ N(0, I)).
        predict_forward(&mut steps, input_moments);
        predict_backward(&mut steps, 1.0);

        let mut unscaled_layers = Vec::new();
        let mut index = 0;
        visit_layers(&self.spec.layers, &mut |layer| {
            if matches!(layer.op, Op::Unscaled(_)) {
                unscaled_layers.push(index);
            }
            index += 1;
        });
        let mut plan = Plan {
            input,
            output,
            init: self.spec.init,
            typical_kernel: self.typical_kernel,
            gain: self.gain,
            c: self.c,
            output_std: self.spec.output_std,
            input_moments,
            steps,
            unscaled_layers,
            paths: Vec::new(),
        };
        plan.paths = paths(&plan.steps, "");
        plan
    }
}

/// Parameter paths in walk order: `block.main.layer`, `block.shortcut.layer`.
fn paths(steps: &[Step], prefix: &str) -> Vec<String> {
    let join = |name: &str| match (prefix.is_empty(), name.is_empty()) {
        (_, true) => prefix.to_string(),
        (true, false) => name.to_string(),
        (false, false) => format!("{prefix}.{name}"),
    };
    let mut out = Vec::new();
    for step in steps {
        let path = join(&step.name);
        if let StepOp::Block { main, shortcut, .. } = &step.op {
            out.push(path.clone());
            out.extend(paths(main, &format!("{path}.main")));
            out.extend(paths(shortcut, &format!("{path}.shortcut")));
        } else {
            out.push(path);
        }
    }
    out
}

fn predict_forward(steps: &mut [Step], input: Moments) -> Moments {
    let mut current = input;
    for step in steps {
        step.input = current;
        step.forward = match &mut step.op {
            StepOp::Block { alpha, beta, main, shortcut, .. } => {
                let (alpha, beta) = (*alpha, *beta);
                let main_out = predict_forward(main, current);
                let shortcut_out = predict_forward(shortcut, current);
                combine(alpha, shortcut_out, beta, main_out)
            }
            _ => transfer(step, current, Mode::Actual).output,
        };
        current = step.forward;
    }
    current
}

/// Sets each step's backward moment, scaling factor and gammas; returns `E[dx^2]` at the input.
fn predict_backward(steps: &mut [Step], output_gradient: f64) -> f64 {
    let mut gradient = output_gradient;
    for step in steps.iter_mut().rev() {
        step.backward = gradient;
        step.scaling = step.output_shape.numel() as f64 * gradient * step.forward.second;
        let input_gradient = match &mut step.op {
            StepOp::Block { alpha, beta, main, shortcut, .. } => {
                let (alpha, beta) = (*alpha, *beta);
                let through_main = predict_backward(main, beta * beta * gradient);
                let through_shortcut = predict_backward(shortcut, alpha * alpha * gradient);
                through_main + through_shortcut
            }
            _ => gradient * transfer(step, step.input, Mode::Actual).backward_gain,
        };
        let dy = gradient;
        match &step.params {
            Some(ParamInit::Weight(weight)) => {
                let g = &weight.geometry;
                let weight_gradient = g.area_out as f64 * g.coverage * step.input.second * dy;
                step.gamma = Some(weight_gradient / weight.second_moment);
                if weight.bias {
                    step.bias_gamma = Some(g.area_out as f64 * dy / step.forward.second);
                }
            }
            Some(ParamInit::Scalar { value, fixed }) => {
                let scalar_gradient = fixed * fixed * step.input_shape.numel() as f64 * step.input.second * dy;
                step.gamma = Some(scalar_gradient / (value * value));
            }
            Some(ParamInit::Bias { .. }) => {
                step.bias_gamma = Some(step.output_shape.area() as f64 * dy / step.forward.second);
            }
            None => {}
        }
        gradient = input_gradient;
    }
    gradient
}
