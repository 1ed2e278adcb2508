//! What a user declares: the network's input, its options and its layers, as plain values.

use std::fmt;

/// The per-sample shape of an activation: an image `[C, H, W]` or a vector `[D]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    Image { channels: usize, height: usize, width: usize },
    Vector { features: usize },
}

impl Shape {
    /// Channels of an image, features of a vector: the `n` of the paper.
    pub fn channels(&self) -> usize {
        match *self {
            Shape::Image { channels, .. } => channels,
            Shape::Vector { features } => features,
        }
    }

    /// The spatial area `rho^2` (`h * w`; 1 for a vector).
    pub fn area(&self) -> usize {
        match *self {
            Shape::Image { height, width, .. } => height * width,
            Shape::Vector { .. } => 1,
        }
    }

    /// Number of elements per sample, `n * rho^2`.
    pub fn numel(&self) -> usize {
        self.channels() * self.area()
    }

    pub fn dims(&self) -> Vec<usize> {
        match *self {
            Shape::Image { channels, height, width } => vec![channels, height, width],
            Shape::Vector { features } => vec![features],
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Shape::Image { channels, height, width } => write!(f, "[{channels}, {height}, {width}]"),
            Shape::Vector { features } => write!(f, "[{features}]"),
        }
    }
}

/// How weight variances are chosen (section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InitScheme {
    /// `E[W^2] = c / (k sqrt(n_in n_out))`, eq. (3): every weight layer gets the same gamma.
    #[default]
    Geometric,
    /// Kaiming fan-in, `g / (n_in k^2)`, eq. (4).
    FanIn,
    /// Kaiming fan-out, `g / (n_out k^2)`, eq. (4).
    FanOut,
    /// Xavier-style arithmetic mean, `g / ((n_in + n_out)/2 k^2)`, eq. (5).
    Arithmetic,
}

impl InitScheme {
    pub const ALL: [InitScheme; 4] =
        [InitScheme::Geometric, InitScheme::FanIn, InitScheme::FanOut, InitScheme::Arithmetic];

    pub fn name(&self) -> &'static str {
        match self {
            InitScheme::Geometric => "geometric",
            InitScheme::FanIn => "fan_in",
            InitScheme::FanOut => "fan_out",
            InitScheme::Arithmetic => "arithmetic",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scheme| scheme.name() == name)
    }
}

impl fmt::Display for InitScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Activations that are not positively homogeneous of degree 1: they break the calculus (Table 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnscaledActivation {
    Sigmoid,
    Tanh,
    Gelu,
    Silu,
    Elu,
    Softplus,
    Softmax,
}

impl UnscaledActivation {
    pub const ALL: [UnscaledActivation; 7] = [
        UnscaledActivation::Sigmoid,
        UnscaledActivation::Tanh,
        UnscaledActivation::Gelu,
        UnscaledActivation::Silu,
        UnscaledActivation::Elu,
        UnscaledActivation::Softplus,
        UnscaledActivation::Softmax,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            UnscaledActivation::Sigmoid => "sigmoid",
            UnscaledActivation::Tanh => "tanh",
            UnscaledActivation::Gelu => "gelu",
            UnscaledActivation::Silu => "silu",
            UnscaledActivation::Elu => "elu",
            UnscaledActivation::Softplus => "softplus",
            UnscaledActivation::Softmax => "softmax",
        }
    }
}

/// Normalization layers: the calculus designs networks that do without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Normalization {
    BatchNorm,
    LayerNorm,
    GroupNorm,
}

impl Normalization {
    pub fn name(&self) -> &'static str {
        match self {
            Normalization::BatchNorm => "batch_norm",
            Normalization::LayerNorm => "layer_norm",
            Normalization::GroupNorm => "group_norm",
        }
    }
}

/// One operation of a network.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Conv2d {
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    },
    Linear {
        out_features: usize,
        bias: bool,
    },
    AvgPool2d {
        kernel: usize,
        stride: usize,
    },
    /// Declared only to be rejected with a helpful message.
    MaxPool2d {
        kernel: usize,
        stride: usize,
    },
    Relu,
    LeakyRelu {
        slope: f64,
    },
    Unscaled(UnscaledActivation),
    /// Declared only to be rejected with a helpful message.
    Normalization(Normalization),
    Dropout {
        p: f64,
    },
    Flatten,
    /// A fixed multiplier the user asked for; the calculus never cancels it.
    Scale {
        factor: f64,
    },
    /// A learnable scalar, initialized per Appendix E.
    Scalar,
    /// A standalone learnable bias, zero at initialization.
    Bias,
    /// `B(x) = alpha S(x) + beta F(x)` (section 11).
    Residual(Residual),
    /// The pre-activation bottleneck of section 11.1 from `in` to `out_channels` channels.
    Bottleneck {
        out_channels: usize,
        width: usize,
        stride: usize,
        beta: f64,
    },
}

/// A residual block `B(x) = alpha S(x) + beta F(x)` with `alpha^2 + beta^2 = 1` (section 11).
#[derive(Debug, Clone, PartialEq)]
pub struct Residual {
    /// Weight of the shortcut; `None`: `sqrt(1 - beta^2)`.
    pub alpha: Option<f64>,
    /// Weight of the main branch; `None`: `sqrt(1 - alpha^2)`.
    pub beta: Option<f64>,
    /// The main branch `F`.
    pub main: Vec<LayerSpec>,
    /// The shortcut `S`; `None` is the identity.
    pub shortcut: Option<Vec<LayerSpec>>,
}

impl Residual {
    /// `(alpha, beta)`, completing the missing one from `alpha^2 + beta^2 = 1`.
    pub fn weights(&self) -> Option<(f64, f64)> {
        match (self.alpha, self.beta) {
            (Some(alpha), Some(beta)) => Some((alpha, beta)),
            (None, Some(beta)) => Some(((1.0 - beta * beta).max(0.0).sqrt(), beta)),
            (Some(alpha), None) => Some((alpha, (1.0 - alpha * alpha).max(0.0).sqrt())),
            (None, None) => None,
        }
    }
}

impl Op {
    /// The keyword a user writes for this op in `network!`.
    pub fn keyword(&self) -> &'static str {
        match self {
            Op::Conv2d { .. } => "conv",
            Op::Linear { .. } => "linear",
            Op::AvgPool2d { .. } => "avg_pool",
            Op::MaxPool2d { .. } => "max_pool",
            Op::Relu => "relu",
            Op::LeakyRelu { .. } => "leaky_relu",
            Op::Unscaled(activation) => activation.name(),
            Op::Normalization(norm) => norm.name(),
            Op::Dropout { .. } => "dropout",
            Op::Flatten => "flatten",
            Op::Scale { .. } => "scale",
            Op::Scalar => "scalar",
            Op::Bias => "bias",
            Op::Residual(_) => "residual",
            Op::Bottleneck { .. } => "bottleneck",
        }
    }

    /// Kernel size of a weight layer (1 for linear), `None` for everything else.
    pub fn weight_kernel(&self) -> Option<usize> {
        match *self {
            Op::Conv2d { kernel, .. } => Some(kernel),
            Op::Linear { .. } => Some(1),
            _ => None,
        }
    }

    /// Whether the op has learnable parameters (blocks hold them in their branches).
    pub fn has_parameters(&self) -> bool {
        matches!(self, Op::Conv2d { .. } | Op::Linear { .. } | Op::Scalar | Op::Bias)
    }

    /// Whether the op contains layers of its own and so names a parameter prefix.
    pub fn is_block(&self) -> bool {
        matches!(self, Op::Residual(_) | Op::Bottleneck { .. })
    }
}

/// A declared layer: an optional name and an op.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    pub name: Option<String>,
    pub op: Op,
    /// `#[allow(unscaled)]`: accept an activation that breaks the calculus.
    pub allow_unscaled: bool,
}

impl LayerSpec {
    pub fn new(op: Op) -> Self {
        LayerSpec { name: None, op, allow_unscaled: false }
    }

    pub fn named(name: impl Into<String>, op: Op) -> Self {
        LayerSpec { name: Some(name.into()), op, allow_unscaled: false }
    }
}

/// Default target standard deviation of the output at initialization (section 7).
pub const DEFAULT_OUTPUT_STD: f64 = 0.05;

/// A whole sequential network as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSpec {
    pub input: Option<Shape>,
    pub init: InitScheme,
    /// `k*` in `c = 2/k*`; `None` picks the most common kernel among weight layers.
    pub typical_kernel: Option<usize>,
    pub output_std: f64,
    /// Insert the fixed scalars of sections 6.2, 7, 8 and 8.1 (default). Off, the network is the
    /// plain declaration with its init: useful to see what the scalars correct.
    pub fixed_scalars: bool,
    /// Scale the init numerator of weights inside residual branches by the branch's share of the
    /// scaling factor (`c beta`, `c alpha`; section 11). Off only to measure what it corrects.
    pub branch_scaling: bool,
    pub layers: Vec<LayerSpec>,
}

impl NetworkSpec {
    pub fn new(input: Shape) -> Self {
        NetworkSpec {
            input: Some(input),
            init: InitScheme::Geometric,
            typical_kernel: None,
            output_std: DEFAULT_OUTPUT_STD,
            fixed_scalars: true,
            branch_scaling: true,
            layers: Vec::new(),
        }
    }

    pub fn layer(mut self, op: Op) -> Self {
        self.layers.push(LayerSpec::new(op));
        self
    }

    pub fn named(mut self, name: &str, op: Op) -> Self {
        self.layers.push(LayerSpec::named(name, op));
        self
    }

    pub fn with_init(mut self, init: InitScheme) -> Self {
        self.init = init;
        self
    }

    pub fn with_typical_kernel(mut self, kernel: usize) -> Self {
        self.typical_kernel = Some(kernel);
        self
    }

    pub fn with_fixed_scalars(mut self, on: bool) -> Self {
        self.fixed_scalars = on;
        self
    }

    pub fn with_branch_scaling(mut self, on: bool) -> Self {
        self.branch_scaling = on;
        self
    }

    pub fn with_output_std(mut self, std: f64) -> Self {
        self.output_std = std;
        self
    }
}
