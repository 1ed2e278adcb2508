//! The op registry: every layer kind a declaration can name, defined once.
//!
//! An [`OpDef`] holds all there is to know about a kind: its keyword, its arguments (positional
//! or named, their types and defaults, the part of the declaration each one is), a one-line
//! example for messages, the rules of [`crate::rules`] that apply to it, its shape rule, its
//! moment rule (Appendices A-B), how the report describes it, and what the generated module calls
//! at run time. The `network!` macro parses and validates arguments from it, its did-you-mean
//! hints list its keywords, the checks, the planner and the report dispatch through it, and the
//! generated code calls the runtime function it names.
//!
//! Adding a layer kind: a variant of [`Op`], an `OpDef` in one of the files of this module, one
//! line in [`Op::def`] and in [`REGISTRY`], and the runtime function it names (in
//! `scalenet::__private::ops`) if it needs a new one.

mod activation;
mod block;
mod pooling;
mod shaping;
pub(crate) mod weight;

use crate::diagnostic::{Diagnostics, LayerField, Rule};
use crate::moments::{Moments, Transfer};
use crate::plan::Step;
use crate::spec::{LayerId, LayerSpec, Residual, Shape};

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
    pub fn name(&self) -> &'static str {
        Op::Unscaled(*self).keyword()
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
        Op::Normalization(*self).keyword()
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
    /// Averages each channel over whatever spatial size reaches it, then flattens:
    /// `[C, H, W] -> [C]`, the head of most ResNets.
    GlobalAvgPool,
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

/// Every layer kind, in the order the documentation lists them.
pub static REGISTRY: &[&OpDef] = &[
    &weight::CONV,
    &weight::LINEAR,
    &pooling::AVG_POOL,
    &pooling::GLOBAL_AVG_POOL,
    &activation::RELU,
    &activation::LEAKY_RELU,
    &shaping::DROPOUT,
    &shaping::FLATTEN,
    &shaping::SCALE,
    &weight::SCALAR,
    &weight::BIAS,
    &block::RESIDUAL,
    &block::BOTTLENECK,
    &pooling::MAX_POOL,
    &activation::SIGMOID,
    &activation::TANH,
    &activation::GELU,
    &activation::SILU,
    &activation::ELU,
    &activation::SOFTPLUS,
    &activation::SOFTMAX,
    &block::BATCH_NORM,
    &block::LAYER_NORM,
    &block::GROUP_NORM,
];

impl Op {
    /// This op's kind in the registry.
    pub fn def(&self) -> &'static OpDef {
        match self {
            Op::Conv2d { .. } => &weight::CONV,
            Op::Linear { .. } => &weight::LINEAR,
            Op::AvgPool2d { .. } => &pooling::AVG_POOL,
            Op::GlobalAvgPool => &pooling::GLOBAL_AVG_POOL,
            Op::MaxPool2d { .. } => &pooling::MAX_POOL,
            Op::Relu => &activation::RELU,
            Op::LeakyRelu { .. } => &activation::LEAKY_RELU,
            Op::Unscaled(UnscaledActivation::Sigmoid) => &activation::SIGMOID,
            Op::Unscaled(UnscaledActivation::Tanh) => &activation::TANH,
            Op::Unscaled(UnscaledActivation::Gelu) => &activation::GELU,
            Op::Unscaled(UnscaledActivation::Silu) => &activation::SILU,
            Op::Unscaled(UnscaledActivation::Elu) => &activation::ELU,
            Op::Unscaled(UnscaledActivation::Softplus) => &activation::SOFTPLUS,
            Op::Unscaled(UnscaledActivation::Softmax) => &activation::SOFTMAX,
            Op::Normalization(Normalization::BatchNorm) => &block::BATCH_NORM,
            Op::Normalization(Normalization::LayerNorm) => &block::LAYER_NORM,
            Op::Normalization(Normalization::GroupNorm) => &block::GROUP_NORM,
            Op::Dropout { .. } => &shaping::DROPOUT,
            Op::Flatten => &shaping::FLATTEN,
            Op::Scale { .. } => &shaping::SCALE,
            Op::Scalar => &weight::SCALAR,
            Op::Bias => &weight::BIAS,
            Op::Residual(_) => &block::RESIDUAL,
            Op::Bottleneck { .. } => &block::BOTTLENECK,
        }
    }

    /// The keyword a user writes for this op in `network!`.
    pub fn keyword(&self) -> &'static str {
        self.def().keyword
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
        matches!(self.def().role, Role::Weight | Role::Scalar | Role::Bias)
    }

    /// Whether the op contains layers of its own and so names a parameter prefix.
    pub fn is_block(&self) -> bool {
        self.def().role == Role::Block
    }

    /// The negative slope of a ReLU-family activation (0 for ReLU).
    pub fn activation_slope(&self) -> Option<f64> {
        match *self {
            Op::Relu => Some(0.0),
            Op::LeakyRelu { slope } => Some(slope),
            _ => None,
        }
    }

    /// The op's arguments in the order of its [`OpDef::params`].
    pub fn args(&self) -> Vec<Option<ArgValue>> {
        (self.def().args)(self)
    }

    /// Builds the op `keyword` names from its arguments (in [`OpDef::params`] order, `None` where
    /// not given: the default applies). `None` for an unknown keyword or a missing required
    /// argument. Front ends validate arguments against `params` first; this is the same
    /// construction, for generated code and tests.
    pub fn from_args(keyword: &str, given: &[Option<ArgValue>]) -> Option<Op> {
        let def = lookup(keyword)?;
        let args = Args::resolve(def, given)?;
        Some((def.build)(&args))
    }
}

/// The op generated code rebuilds its declaration from: `keyword` with its arguments (in
/// [`OpDef::params`] order) and, for a residual block, its branches. Generated code only calls
/// this for declarations the macro has checked, so a failure is a bug in scalenet.
pub fn rebuild(
    keyword: &str,
    args: &[Option<ArgValue>],
    branches: Option<(Vec<LayerSpec>, Option<Vec<LayerSpec>>)>,
) -> Op {
    let op =
        Op::from_args(keyword, args).unwrap_or_else(|| panic!("`{keyword}` with {args:?} was checked at compile time"));
    match (op, branches) {
        (Op::Residual(mut block), Some((main, shortcut))) => {
            block.main = main;
            block.shortcut = shortcut;
            Op::Residual(block)
        }
        (op, _) => op,
    }
}

/// The kind `keyword` names, aliases included.
pub fn lookup(keyword: &str) -> Option<&'static OpDef> {
    REGISTRY.iter().copied().find(|def| def.keyword == keyword || def.aliases.contains(&keyword))
}

/// Every keyword and alias a layer may be written with, for did-you-mean hints.
pub fn keywords() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().flat_map(|def| std::iter::once(def.keyword).chain(def.aliases.iter().copied()))
}

/// What part an op plays for the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A convolution or linear layer: the calculus chooses its init and puts a fixed scalar
    /// before it.
    Weight,
    /// A learnable scalar (Appendix E).
    Scalar,
    /// A standalone bias; a fixed scalar before a weight layer goes before it.
    Bias,
    /// A ReLU-family activation: `c` is chosen for the network's most common slope.
    Activation,
    /// Pooling: changes the scaling factor when it follows a ReLU (section 8).
    Pooling,
    /// A reshape that moves no value; a fixed scalar before a weight layer goes before it.
    Reshape,
    /// Holds branches of its own.
    Block,
    /// Anything else the calculus models by its moment rule alone.
    Plain,
    /// An activation that breaks the calculus, kept only with `#[allow(unscaled)]` and then
    /// modelled by its linear regime.
    Unscaled,
    /// Always rejected by a rule; only declared to get a helpful message.
    Rejected,
}

/// What the generated module calls for an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Expanded from the step's parameters (weights, scalars, biases).
    Parameters,
    /// `let xs = scalenet::__private::ops::<function>(&xs, <args in params order>[, train])?;`
    Call { function: &'static str, train: bool },
    /// Expanded into its branches (blocks).
    Branches,
    /// Never generated: a rule rejects it, or it is kept with `#[allow(unscaled)]`, whose
    /// function is named by `Call`.
    Rejected,
}

/// The type of an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A nonnegative integer: channels, kernel, stride, padding.
    Count,
    /// A real number: probabilities, slopes, factors, branch weights.
    Number,
    /// `true` or `false`.
    Flag,
}

/// What an argument is when it is not given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamDefault {
    /// It must be given.
    Required,
    /// It may be absent (residual's `alpha` and `beta`: give one).
    Absent,
    Value(ArgValue),
    /// The value of the argument at this index (`avg_pool`'s stride is its kernel).
    SameAs(usize),
}

/// One argument a layer kind accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Param {
    pub name: &'static str,
    /// Written without its name, in order (`conv(16, ..)`); otherwise `name = value`.
    pub positional: bool,
    pub kind: ParamKind,
    pub default: ParamDefault,
    /// The part of the declaration a diagnostic about this argument points at.
    pub field: LayerField,
    /// What it means, for messages: "output channels".
    pub meaning: &'static str,
    /// How a message asks for it when it is missing: "its number of output channels first".
    pub missing: &'static str,
}

impl Param {
    pub const fn positional(name: &'static str, kind: ParamKind, field: LayerField) -> Self {
        Param { name, positional: true, kind, default: ParamDefault::Required, field, meaning: name, missing: name }
    }

    pub const fn named(name: &'static str, kind: ParamKind, field: LayerField) -> Self {
        Param { name, positional: false, kind, default: ParamDefault::Required, field, meaning: name, missing: name }
    }

    pub const fn default(mut self, default: ParamDefault) -> Self {
        self.default = default;
        self
    }

    pub const fn meaning(mut self, meaning: &'static str, missing: &'static str) -> Self {
        self.meaning = meaning;
        self.missing = missing;
        self
    }
}

/// The arguments a layer kind accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Params {
    List(&'static [Param]),
    /// Any arguments, ignored: kinds that are rejected whatever they are given.
    Ignored,
}

/// A literal argument value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArgValue {
    Count(usize),
    Number(f64),
    Flag(bool),
}

impl ArgValue {
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            ArgValue::Count(v) => Some(v as f64),
            ArgValue::Number(v) => Some(v),
            ArgValue::Flag(_) => None,
        }
    }
}

/// Arguments with their defaults applied, indexed like [`OpDef::params`].
#[derive(Debug, Clone)]
pub struct Args(Vec<Option<ArgValue>>);

impl Args {
    /// Applies the defaults of `def` to `given`; `None` if a required argument is missing.
    pub fn resolve(def: &OpDef, given: &[Option<ArgValue>]) -> Option<Args> {
        let Params::List(params) = def.params else {
            return Some(Args(Vec::new()));
        };
        let mut values: Vec<Option<ArgValue>> =
            params.iter().enumerate().map(|(i, _)| given.get(i).copied().flatten()).collect();
        for (i, param) in params.iter().enumerate() {
            if values[i].is_none() {
                values[i] = match param.default {
                    ParamDefault::Required => return None,
                    ParamDefault::Absent => None,
                    ParamDefault::Value(value) => Some(value),
                    ParamDefault::SameAs(other) => values.get(other).copied().flatten(),
                };
            }
        }
        Some(Args(values))
    }

    pub fn count(&self, index: usize) -> usize {
        match self.0.get(index).copied().flatten() {
            Some(ArgValue::Count(v)) => v,
            Some(ArgValue::Number(v)) => v as usize,
            _ => 0,
        }
    }

    pub fn number(&self, index: usize) -> f64 {
        self.optional_number(index).unwrap_or(0.0)
    }

    pub fn optional_number(&self, index: usize) -> Option<f64> {
        self.0.get(index).copied().flatten().and_then(|v| v.as_f64())
    }

    pub fn flag(&self, index: usize) -> bool {
        matches!(self.0.get(index).copied().flatten(), Some(ArgValue::Flag(true)))
    }
}

/// A rule that a single declared layer must follow (see [`crate::rules`]).
pub type LayerRule = fn(&LayerSpec, &mut Diagnostics);

/// The output shape of an op from its input shape, or a diagnostic at `id`.
pub type ShapeRule = fn(&Op, Shape, LayerId, &mut Diagnostics) -> Option<Shape>;

/// A layer kind: everything the macro, the checks, the planner, the report and the generated
/// code need to know about it.
pub struct OpDef {
    pub keyword: &'static str,
    /// Other spellings (`swish` for `silu`).
    pub aliases: &'static [&'static str],
    /// One line for the documentation.
    pub summary: &'static str,
    /// A complete use, for messages: `conv(16, kernel = 3, padding = 1)`.
    pub example: &'static str,
    pub params: Params,
    /// Takes braced branches (`residual { .. } shortcut { .. }`).
    pub branches: bool,
    pub role: Role,
    pub build: fn(&Args) -> Op,
    /// The inverse of `build`: the op's arguments in `params` order.
    pub args: fn(&Op) -> Vec<Option<ArgValue>>,
    /// The rules of [`crate::rules`] that apply to this kind.
    pub rules: &'static [LayerRule],
    pub shape: ShapeRule,
    /// Moments through the op (Appendix B); blocks are combined by the planner.
    pub transfer: fn(&Op, &Step, Moments) -> Transfer,
    /// The op column of the report.
    pub describe: fn(&Op, &Step) -> String,
    pub runtime: Runtime,
}

impl std::fmt::Debug for OpDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpDef").field("keyword", &self.keyword).finish_non_exhaustive()
    }
}

impl OpDef {
    /// Whether the calculus keeps this kind without an attribute.
    pub fn is_kept(&self) -> bool {
        !matches!(self.role, Role::Unscaled | Role::Rejected)
    }

    /// The parameters of a kind that takes a list (empty for [`Params::Ignored`]).
    pub fn param_list(&self) -> &'static [Param] {
        match self.params {
            Params::List(params) => params,
            Params::Ignored => &[],
        }
    }
}

/// Shared pieces of the definitions.
mod common {
    use super::*;

    pub fn no_args(_: &Op) -> Vec<Option<ArgValue>> {
        Vec::new()
    }

    pub fn same_shape(_: &Op, input: Shape, _: LayerId, _: &mut Diagnostics) -> Option<Shape> {
        Some(input)
    }

    pub fn identity(_: &Op, _: &Step, input: Moments) -> Transfer {
        Transfer::identity(input)
    }

    pub fn keyword(op: &Op, _: &Step) -> String {
        op.keyword().to_string()
    }

    /// For kinds that never reach the planner (rejected, or expanded into branches).
    pub fn unplanned(op: &Op, _: &Step, input: Moments) -> Transfer {
        debug_assert!(false, "`{}` never reaches the planner", op.keyword());
        Transfer::identity(input)
    }

    /// The diagnostic of an op that needs an image but is given a vector.
    pub fn needs_image(op: &Op, input: Shape, id: LayerId, diagnostics: &mut Diagnostics) {
        diagnostics.push(Rule::ImageInput,
            crate::diagnostic::Location::layer(id, LayerField::Kind),
            format!(
                "`{}` needs an image input [C, H, W], but its input is the vector {input}; move it before `flatten` or declare `input` as [C, H, W]",
                op.keyword()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `build` and `args` are inverses for every kind with an argument list.
    #[test]
    fn every_kind_round_trips_through_its_arguments() {
        let examples = [
            Op::Conv2d { out_channels: 6, kernel: 5, stride: 5, padding: 2, bias: false },
            Op::Linear { out_features: 10, bias: true },
            Op::AvgPool2d { kernel: 2, stride: 2 },
            Op::GlobalAvgPool,
            Op::MaxPool2d { kernel: 3, stride: 2 },
            Op::Relu,
            Op::LeakyRelu { slope: 0.2 },
            Op::Dropout { p: 0.25 },
            Op::Flatten,
            Op::Scale { factor: -1.5 },
            Op::Scalar,
            Op::Bias,
            Op::Bottleneck { out_channels: 64, width: 16, stride: 2, beta: 0.5 },
            Op::Unscaled(UnscaledActivation::Softplus),
        ];
        for op in examples {
            assert_eq!(Op::from_args(op.keyword(), &op.args()), Some(op.clone()), "{}", op.keyword());
        }
    }

    #[test]
    fn keywords_are_unique_and_include_blocks() {
        let all: Vec<&str> = keywords().collect();
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(all.len(), unique.len());
        assert!(all.contains(&"residual") && all.contains(&"bottleneck") && all.contains(&"swish"));
        for def in REGISTRY {
            assert!(std::ptr::eq(lookup(def.keyword).unwrap(), *def));
        }
    }

    #[test]
    fn every_kind_is_registered() {
        for def in REGISTRY {
            if let Params::List(params) = def.params {
                let given: Vec<Option<ArgValue>> = params
                    .iter()
                    .map(|p| match p.kind {
                        ParamKind::Count => Some(ArgValue::Count(1)),
                        ParamKind::Number => Some(ArgValue::Number(0.5)),
                        ParamKind::Flag => Some(ArgValue::Flag(true)),
                    })
                    .collect();
                let op = (def.build)(&Args::resolve(def, &given).unwrap());
                assert!(std::ptr::eq(op.def(), *def), "{}", def.keyword);
            }
        }
    }
}
