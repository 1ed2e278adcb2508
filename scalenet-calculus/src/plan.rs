//! What the calculus computes for a declaration: every op of the generated network (the declared
//! layers plus the fixed scalars the calculus inserts), each weight's initial second moment, and
//! the predicted forward and backward second moments, scaling factors and gammas. The planner
//! that fills it in is [`crate::planner`].

use crate::borders::BorderFactors;
use crate::moments::{Moments, WeightGeometry};
use crate::spec::Op;
use crate::spec::{InitScheme, LayerId, Mirror, Shape, WeightLaw};
use std::fmt;

/// Why the calculus inserted a fixed scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScaleReason {
    /// Before the first weight layer: `E[x0^2] = 1/sqrt(n0 k0^2)` balances its weights against its
    /// biases (section 8.1).
    Input,
    /// The weight layer's kernel differs from the typical kernel `k*` (section 6.2).
    Kernel {
        /// The layer's kernel.
        kernel: usize,
        /// The network's typical kernel `k*`.
        typical: usize,
    },
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
    /// Correlations between positions change the layer's gamma or bias scaling (see
    /// [`crate::coherence`]): its numerator and this scalar compensate.
    Coherence,
    /// Image borders change the layer's input moment or gamma (see [`crate::borders`]).
    Borders,
    /// At the end of a residual branch: `E[F(x)^2] = E[x^2]` (section 11).
    BranchEnd,
    /// Sets the output standard deviation to `output_std` (section 7).
    Output,
}

/// Each reason in words, with the paper's section where it has one: what the report prints
/// beside a fixed scalar.
impl fmt::Display for ScaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleReason::Input => f.write_str("input balances weights and biases §8.1"),
            ScaleReason::Kernel { kernel, typical } => write!(f, "kernel {kernel} ≠ typical kernel {typical} §6.2"),
            ScaleReason::Pooling => f.write_str("average pooling §8"),
            ScaleReason::Padding => f.write_str("zero padding"),
            ScaleReason::Activation => f.write_str("activation gain ≠ the one c is chosen for"),
            ScaleReason::InitScheme => f.write_str("init scheme's bias balance §8.1"),
            ScaleReason::Branch => f.write_str("residual branch weight §11"),
            ScaleReason::Coherence => f.write_str("correlated positions"),
            ScaleReason::Borders => f.write_str("image borders"),
            ScaleReason::BranchEnd => f.write_str("branch end E[F²] = E[x²] §11"),
            ScaleReason::Output => f.write_str("output std target §7"),
        }
    }
}

/// What a step of the plan does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOp {
    /// A layer as declared (or as a bottleneck spells it out: then `id` is the bottleneck's).
    Declared {
        /// The declared layer.
        id: LayerId,
        /// What it does.
        op: Op,
    },
    /// A fixed multiplier inserted by the calculus.
    FixedScale {
        /// The multiplier.
        factor: f64,
        /// Why the calculus needs it, never empty.
        reasons: Vec<ScaleReason>,
    },
    /// `alpha S(x) + beta F(x)`; an empty shortcut is the identity.
    Block {
        /// The declared block.
        id: LayerId,
        /// `residual` or `bottleneck`.
        keyword: &'static str,
        /// The shortcut's weight.
        alpha: f64,
        /// The main branch's weight.
        beta: f64,
        /// The main branch `F`.
        main: Vec<Step>,
        /// The shortcut `S`; empty for the identity.
        shortcut: Vec<Step>,
    },
}

/// Initialization of a convolution or linear layer.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightInit {
    /// candle-nn layout: `(out, in)` for linear, `(out, in, k, k)` for conv.
    pub shape: Vec<usize>,
    /// Fans and kernel, which the moments depend on.
    pub geometry: WeightGeometry,
    /// The geometric numerator `c_l = c sqrt(sigma_l / sigma_0)`: equal gammas need a larger `c`
    /// where the scaling factor has grown and a smaller one where it has shrunk, as inside a
    /// residual branch (section 11 derives `c = beta` the same way).
    pub numerator: f64,
    /// `E[W^2]`: the variance of the centred normal the weights are drawn from, or the mean
    /// square of the mirrored orthogonal weights.
    pub second_moment: f64,
    /// Whether the layer adds a bias (zero at initialization).
    pub bias: bool,
    /// Which dimensions are mirrored (`init: mirrored`); [`Mirror::Gaussian`] for Gaussian weights.
    pub mirror: Mirror,
    /// What image borders do to the layer's moments (see [`crate::borders`]).
    pub borders: BorderFactors,
    /// The rows are used minus their mean over the fan-in (`centred_weights`): `second_moment`
    /// is then the second moment of the centred weights.
    pub centred: bool,
}

/// `N/(N - 1)`: the variance to draw rows of `N` entries with so that, centred, they have the
/// planned one (removing the row mean leaves `(N - 1)/N` of it). Rows of one entry are not centred.
pub(crate) fn centred_draw_factor(row_len: usize) -> f64 {
    let n = row_len as f64;
    n / (n - 1.0).max(1.0)
}

impl WeightInit {
    /// The standard deviation to draw the weights with: for centred rows of `N` entries, removing
    /// the row mean leaves `(N - 1)/N` of the variance, which the draw makes up for.
    pub fn std(&self) -> f64 {
        if self.centred {
            (self.second_moment * centred_draw_factor(self.row_len())).sqrt()
        } else {
            self.second_moment.sqrt()
        }
    }

    /// Entries per output unit: `fan_in k^2`.
    pub fn row_len(&self) -> usize {
        self.geometry.fan_in * self.geometry.kernel * self.geometry.kernel
    }

    /// The input as the layer sees it: centred rows are blind to the common mean of their inputs.
    pub fn seen(&self, input: Moments) -> Moments {
        if self.centred {
            input.without_common_mean()
        } else {
            input
        }
    }
}

/// Parameters of a step and how they start.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamInit {
    /// A convolution's or linear layer's weight.
    Weight(WeightInit),
    /// A learnable scalar `u` starting at `sqrt(c_l)` (Appendix E), followed by the fixed
    /// `1/sqrt(c_l)` so that it is the identity at initialization.
    Scalar {
        /// The scalar's initial value, `sqrt(c_l)`.
        value: f64,
        /// The fixed factor after it, `1/sqrt(c_l)`.
        fixed: f64,
    },
    /// A standalone bias over `channels`, zero at initialization (assumption 4).
    Bias {
        /// The channels (or features) it adds to.
        channels: usize,
    },
}

/// One op of the generated network with its predictions at initialization.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What the step does.
    pub op: StepOp,
    /// The name within its chain: the declared name, `<keyword>_<index>` for unnamed layers with
    /// parameters and blocks, empty for the rest. [`Plan::walk`] gives full parameter paths.
    pub name: String,
    /// The per-sample shape it receives.
    pub input_shape: Shape,
    /// The per-sample shape it produces.
    pub output_shape: Shape,
    /// Its parameters and how they start, if it has any.
    pub params: Option<ParamInit>,
    /// Moments of the input, for centred unit-variance network input.
    pub input: Moments,
    /// Moments of the output.
    pub forward: Moments,
    /// `E[dy^2]` at the output, for `E[dy^2] = 1` at the network output.
    pub backward: f64,
    /// `E[dx^2] / E[dy^2]` through the step from its input moments (Appendix B): what the
    /// backward pass multiplies `backward` by.
    pub backward_gain: f64,
    /// Activation scaling factor at the output, eq. (1).
    pub scaling: f64,
    /// Weight-to-gradient ratio `E[dW^2]/E[W^2]` of the weight or scalar (= gamma, Theorem 1).
    pub gamma: Option<f64>,
    /// Bias scaling, eq. (7), where the step adds a bias.
    pub bias_gamma: Option<f64>,
    /// What the correlations between positions multiply the weight's (or scalar's) gamma by:
    /// `E[dW^2]` with the cross terms over `E[dW^2]` without them (see [`crate::coherence`]); 1
    /// where positions are independent, as the paper assumes.
    pub coherence: Option<f64>,
    /// The same for the bias scaling.
    pub bias_coherence: Option<f64>,
}

impl Step {
    pub(crate) fn new(
        op: StepOp,
        name: String,
        input_shape: Shape,
        output_shape: Shape,
        params: Option<ParamInit>,
    ) -> Self {
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
            backward_gain: 0.0,
            scaling: 0.0,
            gamma: None,
            bias_gamma: None,
            coherence: None,
            bias_coherence: None,
        }
    }

    /// The declared layer this step implements; `None` for an inserted fixed scalar.
    pub fn layer_id(&self) -> Option<LayerId> {
        match self.op {
            StepOp::Declared { id, .. } | StepOp::Block { id, .. } => Some(id),
            StepOp::FixedScale { .. } => None,
        }
    }

    /// The weight's initialization, for a convolution or linear layer.
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
    /// The step.
    pub step: &'a Step,
}

/// The calculus's result for one network.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The per-sample input shape.
    pub input: Shape,
    /// The per-sample output shape.
    pub output: Shape,
    /// The variance rule of the weights.
    pub init: InitScheme,
    /// Gaussian or mirrored weights.
    pub weights: WeightLaw,
    /// `k*` of `c = 2/k*` (section 6.2).
    pub typical_kernel: usize,
    /// `2 / (1 + a^2)` for the network's activation slope `a`.
    pub gain: f64,
    /// `c = gain / k*`.
    pub c: f64,
    /// The target output standard deviation at initialization (section 7).
    pub output_std: f64,
    /// Whether gammas and the init compensate the correlations between positions
    /// ([`crate::coherence`]).
    pub spatial_coherence: bool,
    /// Whether the correlations between positions and the image borders were modelled: `false`
    /// when a map of the network is too large to tabulate them ([`crate::coherence::MAX_OFFSETS`]),
    /// and the plan is then the paper's, which takes positions as independent and alike.
    pub positions_modelled: bool,
    /// Whether weight rows are centred over their fan-in (`centred_weights`).
    pub centred_weights: bool,
    /// `output_std` is that of what varies with the input (see [`crate::NetworkSpec`]).
    pub varying_output_std: bool,
    /// The format the network is declared to train in, if any (`precision`).
    pub precision: Option<crate::spec::Format>,
    /// Network input moments the predictions assume.
    pub input_moments: Moments,
    /// The top-level steps, blocks holding their branches.
    pub steps: Vec<Step>,
    /// Declared layers kept with `#[allow(unscaled)]`: the predictions treat them as the identity.
    pub unscaled_layers: Vec<LayerId>,
    /// Parameter path of every step, in [`Plan::walk`] order.
    pub(crate) paths: Vec<String>,
}

impl Plan {
    /// A hash of everything the plan holds (FNV-1a over its `Debug` form, which writes every
    /// number exactly): equal plans, equal fingerprints. `network!` records the fingerprint of the
    /// plan it computed at compile time, so tests can check that the plan a generated network
    /// recomputes at run time (`Net::plan()`) is the one its constants were baked from.
    pub fn fingerprint(&self) -> u64 {
        format!("{self:?}")
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
    }

    /// Predicted standard deviation of the network output.
    pub fn predicted_output_std(&self) -> f64 {
        self.steps.last().map_or(self.input_moments.std(), |step| step.forward.std())
    }

    /// Predicted standard deviation of what varies with the input in the network output: what
    /// `output_std` calibrates.
    pub fn predicted_input_dependent_std(&self) -> f64 {
        self.steps.last().map_or(self.input_moments.std(), |step| step.forward.input_dependent_std())
    }

    /// Every step, blocks before their branches (main, then shortcut), with its parameter path.
    pub fn walk(&self) -> Vec<StepRef<'_>> {
        walk_steps(&self.steps)
            .into_iter()
            .zip(&self.paths)
            .map(|((depth, step), path)| StepRef { path, depth, step })
            .collect()
    }

    /// Steps with a convolution or linear weight, in network order.
    pub fn weight_steps(&self) -> impl Iterator<Item = StepRef<'_>> {
        self.walk().into_iter().filter(|s| s.step.weight().is_some())
    }

    /// The step of the layer with parameter path `path` (e.g. `conv1`, `res1.main.conv_3`).
    pub fn step(&self, path: &str) -> Option<&Step> {
        self.walk().into_iter().find(|s| s.path == path && !s.step.name.is_empty()).map(|s| s.step)
    }

    /// The step that implements declared layer `id` (a pre-order position converts).
    pub fn step_of_layer(&self, id: impl Into<LayerId>) -> Option<&Step> {
        let id = id.into();
        self.walk().into_iter().map(|s| s.step).find(|step| step.layer_id() == Some(id))
    }
}

/// Every step of `steps` with its depth in blocks, blocks before their branches (main, then
/// shortcut): [`Plan::walk`]'s order.
pub(crate) fn walk_steps(steps: &[Step]) -> Vec<(usize, &Step)> {
    fn visit<'a>(steps: &'a [Step], depth: usize, out: &mut Vec<(usize, &'a Step)>) {
        for step in steps {
            out.push((depth, step));
            if let StepOp::Block { main, shortcut, .. } = &step.op {
                visit(main, depth + 1, out);
                visit(shortcut, depth + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    visit(steps, 0, &mut out);
    out
}

/// The parameter path of `name` in the chain at `prefix`.
pub(crate) fn child_path(prefix: &str, name: &str) -> String {
    match (prefix.is_empty(), name.is_empty()) {
        (_, true) => prefix.to_string(),
        (true, false) => name.to_string(),
        (false, false) => format!("{prefix}.{name}"),
    }
}
