//! Errors found in a declaration, each pointing at the part of the declaration at fault.

use crate::spec::LayerId;
use std::fmt;

/// A part of a layer's declaration, so that a front end (the `network!` macro) can underline the
/// exact token at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerField {
    /// The layer's keyword (`conv`, `max_pool`, ...).
    Kind,
    /// The layer's name (`conv1:`), or its keyword when it has none.
    Name,
    /// The positional size: output channels or features, pooling kernel.
    Size,
    /// A convolution's `kernel`.
    Kernel,
    /// A `stride`.
    Stride,
    /// A convolution's `padding`.
    Padding,
    /// A convolution's `groups`.
    Groups,
    /// Dropout probability.
    Probability,
    /// Leaky ReLU slope.
    Slope,
    /// `scale(f)` factor.
    Factor,
    /// A residual block's `alpha`.
    Alpha,
    /// A residual block's `beta`.
    Beta,
    /// A bottleneck's inner width.
    Width,
    /// The last layer of a residual block's main branch (or the block's keyword if it is empty).
    MainEnd,
    /// The last layer of a residual block's shortcut (or the block's keyword for the identity).
    ShortcutEnd,
}

/// The rule a diagnostic reports: each names its function in [`crate::rules`] or the shape rule
/// that found it, so a front end can match on it rather than on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// [`crate::rules::check_network_options`]: positive input dimensions, `output_std`, `k*`,
    /// `centred_weights` without mirrored weights.
    NetworkOptions,
    /// [`crate::rules::check_unique_names`], [`crate::rules::check_unique_fields`].
    UniqueNames,
    /// [`crate::rules::check_reserved_names`].
    ReservedNames,
    /// [`crate::rules::check_size_limits`], and the shape and weight sizes of shape inference.
    SizeLimit,
    /// [`crate::rules::check_finite_plan`].
    FinitePlan,
    /// [`crate::rules::check_allow_unscaled_target`].
    AllowUnscaledTarget,
    /// [`crate::rules::reject_max_pooling`] (Table 1).
    MaxPooling,
    /// [`crate::rules::reject_mismatched_strides`] (Table 1, Appendix B).
    StrideEqualsKernel,
    /// [`crate::rules::reject_non_homogeneous_activations`] (Table 1).
    PositivelyHomogeneous,
    /// [`crate::rules::reject_normalization`] (sections 1, 11).
    NoNormalization,
    /// [`crate::rules::check_positive_sizes`].
    PositiveSizes,
    /// [`crate::rules::check_dropout_probability`] (Appendix B).
    DropoutProbability,
    /// [`crate::rules::check_leaky_relu_slope`].
    LeakyReluSlope,
    /// [`crate::rules::check_scale_factor`] (Appendix B).
    ScaleFactor,
    /// [`crate::rules::check_residual_weights`] (section 11).
    ResidualWeights,
    /// A layer that needs an image `[C, H, W]` is given a vector.
    ImageInput,
    /// A layer that needs a vector is given an image.
    VectorInput,
    /// A window (convolution, pooling) must fit its input and tile it exactly.
    ExactWindow,
    /// A grouped convolution's `groups` divides both channel counts ([`crate::Op::Conv2d`]).
    GroupsDivideChannels,
    /// A residual block's branches must end in the same shape (section 11).
    BranchShapes,
    /// A bottleneck needs an image whose size its stride divides (section 11.1).
    BottleneckShape,
    /// [`crate::rules::check_mirrored_weights`] (`init: mirrored`).
    MirroredWeights,
    /// A warning, not an error ([`Plan::warnings`](crate::Plan::warnings)): a global pool whose
    /// output is predicted to be mostly channel offsets, the same for every input.
    OffsetDominatedPool,
    /// A warning: a map too large for the planner to tabulate the correlations between its
    /// positions ([`crate::coherence::MAX_OFFSETS`]), so the plan leaves them and the borders out.
    PositionsNotModelled,
    /// [`crate::precision::check_format`]: predicted gradients that no single loss scale fits into
    /// f16 (an error with `precision: f16`, a warning without a `precision`).
    PrecisionRange,
}

/// A fix that depends on the front end's syntax: the calculus says what to do, each front end
/// words it in its own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fix {
    /// Keep the layer knowingly: `#[allow(unscaled)]` in `network!`,
    /// [`LayerSpec::allow_unscaled`](crate::LayerSpec::allow_unscaled) in the builder API.
    AllowUnscaled,
}

impl Fix {
    /// The fix in the builder API's words.
    pub fn builder_words(&self) -> &'static str {
        match self {
            Fix::AllowUnscaled => "or set `allow_unscaled` on the layer to keep it knowingly",
        }
    }
}

/// A network-level option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkField {
    /// `input`.
    Input,
    /// `init`.
    Init,
    /// `typical_kernel`.
    TypicalKernel,
    /// `output_std`.
    OutputStd,
    /// `centred_weights`.
    CentredWeights,
}

/// Where a diagnostic points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// A network-level option.
    Network(NetworkField),
    /// A part of a declared layer.
    Layer {
        /// The layer's pre-order position.
        id: LayerId,
        /// The part of it at fault.
        field: LayerField,
    },
}

impl Location {
    /// The location of `field` in layer `id`.
    pub fn layer(id: LayerId, field: LayerField) -> Self {
        Location::Layer { id, field }
    }
}

/// One rule broken by a declaration: which rule, where, a lowercase sentence that names the fix
/// in the layer vocabulary of the registry (`avg_pool(2)`, `stride = 5`), and a fix that a front
/// end words in its own syntax.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// The rule broken.
    pub rule: Rule,
    /// Where it is broken.
    pub location: Location,
    /// A lowercase sentence that names the fix.
    pub message: String,
    /// A fix that each front end words in its own syntax, appended to `message`.
    pub fix: Option<Fix>,
}

impl Diagnostic {
    /// A diagnostic without a front-end fix.
    pub fn new(rule: Rule, location: Location, message: impl Into<String>) -> Self {
        Diagnostic { rule, location, message: message.into(), fix: None }
    }

    /// The message with the front-end fix in `words`.
    pub fn render(&self, words: impl Fn(Fix) -> String) -> String {
        match self.fix {
            Some(fix) => format!("{}, {}", self.message, words(fix)),
            None => self.message.clone(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.render(|fix| fix.builder_words().to_string());
        match self.location {
            Location::Network(field) => write!(f, "{field:?}: {message}"),
            Location::Layer { id, field } => write!(f, "layer {} ({field:?}): {message}", id.0),
        }
    }
}

impl std::error::Error for Diagnostic {}

/// All diagnostics of one declaration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Records a diagnostic.
    pub fn push(&mut self, rule: Rule, location: Location, message: impl Into<String>) {
        self.0.push(Diagnostic::new(rule, location, message));
    }

    /// Records a diagnostic whose fix depends on the front end.
    pub fn push_with_fix(&mut self, rule: Rule, location: Location, message: impl Into<String>, fix: Fix) {
        let mut diagnostic = Diagnostic::new(rule, location, message);
        diagnostic.fix = Some(fix);
        self.0.push(diagnostic);
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The diagnostics in the order they were recorded.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
