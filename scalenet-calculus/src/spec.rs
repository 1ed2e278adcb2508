//! What a user declares: the network's input, its options and its layers, as plain values.

use std::fmt;

/// The per-sample shape of an activation: an image `[C, H, W]` or a vector `[D]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// An image.
    Image {
        /// `C`.
        channels: usize,
        /// `H`.
        height: usize,
        /// `W`.
        width: usize,
    },
    /// A vector.
    Vector {
        /// `D`.
        features: usize,
    },
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

    /// Number of elements per sample, `n * rho^2`. Shapes that reach the planner have at most
    /// [`MAX_ELEMENTS`]; [`Shape::checked_numel`] is for those that may not.
    pub fn numel(&self) -> usize {
        self.channels() * self.area()
    }

    /// Number of elements per sample, or `None` if it does not fit in a `usize`.
    pub fn checked_numel(&self) -> Option<usize> {
        self.dims().into_iter().try_fold(1usize, usize::checked_mul)
    }

    /// `[C, H, W]` or `[D]`.
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

/// The most elements a declaration may ask for in one tensor: an activation per sample or a
/// weight. Beyond it candle's indexing (and the machine's memory) gives out, and every size
/// arithmetic of the calculus is exact below it.
pub const MAX_ELEMENTS: usize = 1 << 31;

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
    /// Every scheme, in the order reports list them.
    pub const ALL: [InitScheme; 4] =
        [InitScheme::Geometric, InitScheme::FanIn, InitScheme::FanOut, InitScheme::Arithmetic];

    /// The name a declaration writes (`init: fan_in`).
    pub fn name(&self) -> &'static str {
        match self {
            InitScheme::Geometric => "geometric",
            InitScheme::FanIn => "fan_in",
            InitScheme::FanOut => "fan_out",
            InitScheme::Arithmetic => "arithmetic",
        }
    }

    /// The scheme a declaration names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scheme| scheme.name() == name)
    }
}

impl fmt::Display for InitScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the weights of a layer are drawn, given the variance its [`InitScheme`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WeightLaw {
    /// Independent centred normals (the paper's assumption 3).
    #[default]
    Gaussian,
    /// Mirrored ("looks-linear") semi-orthogonal weights, `[[W0, -W0], [-W0, W0]]` (Burkholz &
    /// Dubatovka 2019): with zero biases the network computes a linear map at initialization.
    /// `W0` is scaled so that `E[W^2]` is the variance of the [`InitScheme`].
    Mirrored,
    /// Mirrored weights with `W0` exactly (semi-)orthogonal, gain 1: `E[W^2] = 1/max(rows, cols)`
    /// of `W0`, whatever the [`InitScheme`]. With orthogonal `W0` every singular value of the
    /// input-output Jacobian is 1 at initialization (dynamical isometry).
    MirroredOrthogonal,
}

impl WeightLaw {
    /// Whether the weights are mirrored.
    pub fn is_mirrored(&self) -> bool {
        !matches!(self, WeightLaw::Gaussian)
    }
}

/// Which dimensions of a weight are mirrored under [`WeightLaw::Mirrored`]: the first weight
/// layer along its outputs (`[W0; -W0]`), the last along its inputs (`[W0, -W0]`), every other
/// along both; a network with a single weight layer keeps it unmirrored (orthogonal `W0`).
/// Gaussian weights are [`Mirror::Gaussian`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mirror {
    /// Gaussian weights: nothing mirrored.
    #[default]
    Gaussian,
    /// Orthogonal, not mirrored: the only weight layer of a mirrored network.
    Unmirrored,
    /// Rows mirrored: `[W0; -W0]`.
    Outputs,
    /// Columns mirrored: `[W0, -W0]`.
    Inputs,
    /// Both: `[[W0, -W0], [-W0, W0]]`.
    Both,
}

impl Mirror {
    /// `(rows, columns)` of `W0` for a weight of `fan_out` outputs and `fan_in` inputs, each
    /// with a `k x k` kernel: the weight flattened to `(out, in k^2)`, halved where mirrored.
    pub fn half_shape(&self, fan_in: usize, fan_out: usize, kernel: usize) -> (usize, usize) {
        let (rows, cols) = match self {
            Mirror::Gaussian | Mirror::Unmirrored => (fan_out, fan_in),
            Mirror::Outputs => (fan_out / 2, fan_in),
            Mirror::Inputs => (fan_out, fan_in / 2),
            Mirror::Both => (fan_out / 2, fan_in / 2),
        };
        (rows, cols * kernel * kernel)
    }

    /// Whether the rows are mirrored.
    pub fn mirrors_outputs(&self) -> bool {
        matches!(self, Mirror::Outputs | Mirror::Both)
    }

    /// Whether the columns are mirrored.
    pub fn mirrors_inputs(&self) -> bool {
        matches!(self, Mirror::Inputs | Mirror::Both)
    }

    /// Its name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Mirror::Gaussian => "gaussian",
            Mirror::Unmirrored => "unmirrored",
            Mirror::Outputs => "outputs",
            Mirror::Inputs => "inputs",
            Mirror::Both => "both",
        }
    }
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

/// The identity of a declared layer: its position in pre-order (a block, then its main branch,
/// then its shortcut, then the layers after it), assigned once by
/// [`NetworkSpec::assign_layer_ids`] and carried by checks, diagnostics, the plan and the macro's
/// spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LayerId(pub usize);

impl From<usize> for LayerId {
    fn from(position: usize) -> Self {
        LayerId(position)
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A declared layer: an optional name and an op.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    /// Pre-order position, set by [`NetworkSpec::assign_layer_ids`].
    pub id: LayerId,
    /// The declared name (`conv1:`), which names its parameters.
    pub name: Option<String>,
    /// What the layer does.
    pub op: Op,
    /// `#[allow(unscaled)]`: accept an activation that breaks the calculus.
    pub allow_unscaled: bool,
}

impl LayerSpec {
    /// An unnamed layer.
    pub fn new(op: Op) -> Self {
        LayerSpec { id: LayerId::default(), name: None, op, allow_unscaled: false }
    }

    /// A named layer.
    pub fn named(name: impl Into<String>, op: Op) -> Self {
        LayerSpec { id: LayerId::default(), name: Some(name.into()), op, allow_unscaled: false }
    }

    /// The branches of a residual block (main, then shortcut); empty for other layers.
    pub fn branches(&self) -> [&[LayerSpec]; 2] {
        match &self.op {
            Op::Residual(block) => [&block.main, block.shortcut.as_deref().unwrap_or_default()],
            _ => [&[], &[]],
        }
    }
}

/// Default target standard deviation of the output at initialization (section 7): logits at unit
/// scale, like every other signal the plan keeps.
///
/// Section 7 has no theory for it and calls output variances of 0.01 to 0.1 reasonable; the paper's
/// experiments scale the output to std 0.05 (appendix H). A small output is a small step in
/// function space (every weight gradient carries the output scalar, so the logits move by the
/// rate times its square): on Fashion-MNIST under plain SGD (`scalenet-experiments compare`, each
/// std at its best rate) the pre-activation ResNet reached 75.0% test accuracy at std 0.05, 78.4%
/// at 0.316, 80.9% at 1 and 78.1% at 3 in the same steps (docs/experiments.md). Declare
/// `output_std` to choose another, a small one for regression onto targets near zero.
pub const DEFAULT_OUTPUT_STD: f64 = 1.0;

/// A whole sequential network as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSpec {
    /// The per-sample input shape.
    pub input: Shape,
    /// The variance rule of the weights (default: geometric).
    pub init: InitScheme,
    /// Gaussian (default) or mirrored orthogonal weights (`init: mirrored`).
    pub weights: WeightLaw,
    /// `k*` in `c = 2/k*`; `None` picks the most common kernel among weight layers.
    pub typical_kernel: Option<usize>,
    /// The target output standard deviation at initialization (section 7; default
    /// [`DEFAULT_OUTPUT_STD`], 1).
    pub output_std: f64,
    /// Insert the fixed scalars of sections 6.2, 7, 8 and 8.1 (default). Off, the network is the
    /// plain declaration with its init: useful to see what the scalars correct.
    pub fixed_scalars: bool,
    /// Scale the init numerator of weights inside residual branches by the branch's share of the
    /// scaling factor (`c beta`, `c alpha`; section 11). Off only to measure what it corrects.
    pub branch_scaling: bool,
    /// Model the correlations between positions that average pooling and channel offsets create
    /// (see [`crate::coherence`]), in the predicted gammas and in the weights and scalars chosen
    /// to equalize them (default). Off, positions are independent, as in the paper.
    pub spatial_coherence: bool,
    /// Use every weight row minus its mean over the fan-in (`W - mean(W)` per output unit, at
    /// every forward pass), so a layer cannot pass on the offset that ReLU means add to all of its
    /// inputs alike (see [`crate::moments::Moments::without_common_mean`]). Off by default, as in
    /// the paper.
    pub centred_weights: bool,
    /// `output_std` sets the standard deviation of what varies with the input in the output,
    /// leaving out the offsets that are the same for every input (channel means that ReLUs leave
    /// and a global pool keeps; see [`crate::moments::Moments::fixed`]). Off by default: the
    /// paper's section 7 calibrates the whole output.
    pub varying_output_std: bool,
    /// The format the network is declared to train in (`precision: f16`): the plan must fit it
    /// ([`crate::precision::check_format`]). `None` checks f16 and warns.
    pub precision: Option<Format>,
    /// The layers in network order.
    pub layers: Vec<LayerSpec>,
}

impl NetworkSpec {
    /// A network of no layers on `input`, with the defaults.
    pub fn new(input: Shape) -> Self {
        NetworkSpec {
            input,
            init: InitScheme::Geometric,
            weights: WeightLaw::Gaussian,
            typical_kernel: None,
            output_std: DEFAULT_OUTPUT_STD,
            fixed_scalars: true,
            branch_scaling: true,
            spatial_coherence: true,
            centred_weights: false,
            varying_output_std: false,
            precision: None,
            layers: Vec::new(),
        }
    }

    /// Appends an unnamed layer.
    pub fn layer(mut self, op: Op) -> Self {
        self.layers.push(LayerSpec::new(op));
        self.assign_layer_ids();
        self
    }

    /// Appends a named layer.
    pub fn named(mut self, name: &str, op: Op) -> Self {
        self.layers.push(LayerSpec::named(name, op));
        self.assign_layer_ids();
        self
    }

    /// Numbers every layer in pre-order: the only place layer ids are made.
    pub fn assign_layer_ids(&mut self) {
        fn number(layers: &mut [LayerSpec], next: &mut usize) {
            for layer in layers {
                layer.id = LayerId(*next);
                *next += 1;
                if let Op::Residual(block) = &mut layer.op {
                    number(&mut block.main, next);
                    number(block.shortcut.as_deref_mut().unwrap_or_default(), next);
                }
            }
        }
        number(&mut self.layers, &mut 0);
    }

    /// Every declared layer in pre-order (the order of their [`LayerId`]s): a block, its main
    /// branch, its shortcut, then the layers after it.
    pub fn walk(&self) -> impl Iterator<Item = &LayerSpec> {
        let mut stack: Vec<std::slice::Iter<'_, LayerSpec>> = vec![self.layers.iter()];
        std::iter::from_fn(move || loop {
            let top = stack.last_mut()?;
            match top.next() {
                Some(layer) => {
                    let [main, shortcut] = layer.branches();
                    stack.push(shortcut.iter());
                    stack.push(main.iter());
                    return Some(layer);
                }
                None => {
                    stack.pop();
                }
            }
        })
    }

    /// Sets the variance rule.
    pub fn with_init(mut self, init: InitScheme) -> Self {
        self.init = init;
        self
    }

    /// Sets both halves of the `init` option (see [`Self::parse_init`]).
    pub fn with_init_law(self, (init, weights): (InitScheme, WeightLaw)) -> Self {
        self.with_init(init).with_weights(weights)
    }

    /// Sets how the weights are drawn.
    pub fn with_weights(mut self, weights: WeightLaw) -> Self {
        self.weights = weights;
        self
    }

    /// Reads the `init` option as [`Self::init_name`] writes it; `None` for an unknown name.
    pub fn parse_init(text: &str) -> Option<(InitScheme, WeightLaw)> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        match text.strip_prefix("mirrored") {
            Some("") => Some((InitScheme::Geometric, WeightLaw::Mirrored)),
            Some("(orthogonal)") => Some((InitScheme::Geometric, WeightLaw::MirroredOrthogonal)),
            Some(rest) => {
                let scheme = rest.strip_prefix('(')?.strip_suffix(')')?;
                Some((InitScheme::from_name(scheme)?, WeightLaw::Mirrored))
            }
            None => Some((InitScheme::from_name(&text)?, WeightLaw::Gaussian)),
        }
    }

    /// The `init` option as written: `geometric`, `mirrored`, `mirrored(fan_in)`,
    /// `mirrored(orthogonal)`.
    pub fn init_name(&self) -> String {
        match self.weights {
            WeightLaw::Gaussian => self.init.name().to_string(),
            WeightLaw::Mirrored if self.init == InitScheme::Geometric => "mirrored".to_string(),
            WeightLaw::Mirrored => format!("mirrored({})", self.init.name()),
            WeightLaw::MirroredOrthogonal => "mirrored(orthogonal)".to_string(),
        }
    }

    /// Sets `k*`.
    pub fn with_typical_kernel(mut self, kernel: usize) -> Self {
        self.typical_kernel = Some(kernel);
        self
    }

    /// Sets [`Self::fixed_scalars`].
    pub fn with_fixed_scalars(mut self, on: bool) -> Self {
        self.fixed_scalars = on;
        self
    }

    /// Sets [`Self::branch_scaling`].
    pub fn with_branch_scaling(mut self, on: bool) -> Self {
        self.branch_scaling = on;
        self
    }

    /// Sets [`Self::spatial_coherence`].
    pub fn with_spatial_coherence(mut self, on: bool) -> Self {
        self.spatial_coherence = on;
        self
    }

    /// Sets [`Self::centred_weights`].
    pub fn with_centred_weights(mut self, on: bool) -> Self {
        self.centred_weights = on;
        self
    }

    /// Sets [`Self::varying_output_std`].
    pub fn with_varying_output_std(mut self, on: bool) -> Self {
        self.varying_output_std = on;
        self
    }

    /// Sets [`Self::precision`].
    pub fn with_precision(mut self, precision: Option<Format>) -> Self {
        self.precision = precision;
        self
    }

    /// Sets [`Self::output_std`].
    pub fn with_output_std(mut self, std: f64) -> Self {
        self.output_std = std;
        self
    }
}

#[cfg(test)]
mod init_name_tests {
    use super::*;

    #[test]
    fn every_init_name_reads_back_as_itself() {
        let laws = [WeightLaw::Gaussian, WeightLaw::Mirrored, WeightLaw::MirroredOrthogonal];
        for init in InitScheme::ALL {
            for weights in laws {
                let spec = NetworkSpec::new(Shape::Vector { features: 4 }).with_init(init).with_weights(weights);
                let (read_init, read_weights) = NetworkSpec::parse_init(&spec.init_name()).expect("a known name");
                assert_eq!(read_weights, weights);
                // `mirrored(orthogonal)` ignores the variance rule, so it reads back as geometric.
                if weights != WeightLaw::MirroredOrthogonal {
                    assert_eq!(read_init, init, "{}", spec.init_name());
                }
            }
        }
        assert_eq!(NetworkSpec::parse_init("mirrored( fan_out )"), Some((InitScheme::FanOut, WeightLaw::Mirrored)));
        for bad in ["mirrored(", "mirrored(he)", "mirroredfan_in", "orthogonal", "mirrored(orthogonal)x"] {
            assert_eq!(NetworkSpec::parse_init(bad), None, "{bad}");
        }
    }
}

/// Activations that are not positively homogeneous of degree 1: they break the calculus (Table 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnscaledActivation {
    /// `sigmoid`.
    Sigmoid,
    /// `tanh`.
    Tanh,
    /// `gelu`.
    Gelu,
    /// `silu` (or `swish`).
    Silu,
    /// `elu`.
    Elu,
    /// `softplus`.
    Softplus,
    /// `softmax`.
    Softmax,
}

/// Normalization layers: the calculus designs networks that do without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Normalization {
    /// `batch_norm`.
    BatchNorm,
    /// `layer_norm`.
    LayerNorm,
    /// `group_norm`.
    GroupNorm,
}

/// One operation of a network.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `conv(out, kernel = k, stride = s, padding = p, bias = true)`.
    Conv2d {
        /// Output channels.
        out_channels: usize,
        /// Kernel size (square).
        kernel: usize,
        /// Stride: 1, or the kernel (Table 1).
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
        /// Whether it adds a learnable bias.
        bias: bool,
        /// Channel groups: each output channel sees `in / groups` input channels (1: every
        /// input; `in`: depthwise). Both channel counts must be multiples of it.
        groups: usize,
    },
    /// `linear(out, bias = true)`.
    Linear {
        /// Output features.
        out_features: usize,
        /// Whether it adds a learnable bias.
        bias: bool,
    },
    /// `avg_pool(k)`.
    AvgPool2d {
        /// Window size.
        kernel: usize,
        /// Stride, the window size (Table 1).
        stride: usize,
    },
    /// Averages each channel over whatever spatial size reaches it, then flattens:
    /// `[C, H, W] -> [C]`, the head of most ResNets.
    GlobalAvgPool,
    /// Declared only to be rejected with a helpful message.
    MaxPool2d {
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// `relu`.
    Relu,
    /// `leaky_relu(slope)`.
    LeakyRelu {
        /// The slope for negative inputs.
        slope: f64,
    },
    /// An activation kept with `#[allow(unscaled)]`, predicted as the identity.
    Unscaled(UnscaledActivation),
    /// Declared only to be rejected with a helpful message.
    Normalization(Normalization),
    /// `dropout(p)`: inverted dropout.
    Dropout {
        /// The probability of dropping a unit.
        p: f64,
    },
    /// `flatten`: `[C, H, W] -> [C*H*W]`.
    Flatten,
    /// A fixed multiplier the user asked for; the calculus never cancels it.
    Scale {
        /// The multiplier.
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
        /// Output channels.
        out_channels: usize,
        /// Channels of the inner 3x3 convolution.
        width: usize,
        /// Downsampling factor: 1, or the window of the average pool the block adds.
        stride: usize,
        /// The main branch's weight.
        beta: f64,
    },
}

/// A number format a network computes in: what the `precision` option declares, and what the
/// range analysis of [`crate::precision`] checks the predicted signals against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// IEEE single precision: 8 exponent bits, 23 mantissa bits.
    F32,
    /// bfloat16: f32's 8 exponent bits (its range), 7 mantissa bits.
    Bf16,
    /// IEEE half precision: 5 exponent bits (largest 65504, smallest normal 2^-14), 10 mantissa bits.
    F16,
}

impl Format {
    /// Every format, widest first.
    pub const ALL: [Format; 3] = [Format::F32, Format::Bf16, Format::F16];

    /// The name the `precision` option and the command lines use.
    pub fn name(self) -> &'static str {
        match self {
            Format::F32 => "f32",
            Format::Bf16 => "bf16",
            Format::F16 => "f16",
        }
    }

    /// The format called `name` (`f32`, `bf16`, `f16`).
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|format| format.name() == name)
    }

    /// The largest finite value.
    pub fn max(self) -> f64 {
        match self {
            Format::F32 => f32::MAX as f64,
            // (2 - 2^-7) 2^127
            Format::Bf16 => 3.389_531_389_251_535_5e38,
            Format::F16 => 65504.0,
        }
    }

    /// The smallest positive normal value: below it, values lose precision (subnormals) and then
    /// flush to zero.
    pub fn min_normal(self) -> f64 {
        match self {
            Format::F32 | Format::Bf16 => f32::MIN_POSITIVE as f64,
            Format::F16 => 2f64.powi(-14),
        }
    }

    /// The bits of the stored mantissa.
    pub fn mantissa_bits(self) -> u32 {
        match self {
            Format::F32 => 23,
            Format::Bf16 => 7,
            Format::F16 => 10,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
