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
mod def;
pub(crate) mod layer_rules;
mod pooling;
mod shaping;
pub(crate) mod weight;

pub use def::{
    ArgValue, Args, BorderRule, LayerRule, OpDef, Param, ParamDefault, ParamKind, Params, Role, Runtime, ShapeRule,
};

use crate::coherence::Covariance;
use crate::diagnostic::{Diagnostics, LayerField, Rule};
use crate::moments::{Moments, Transfer};
use crate::plan::{Step, StepOp};
use crate::spec::{LayerId, LayerSpec, Shape};
pub use crate::spec::{Normalization, Op, UnscaledActivation};

impl UnscaledActivation {
    /// Its keyword.
    pub fn name(&self) -> &'static str {
        Op::Unscaled(*self).keyword()
    }
}

impl Normalization {
    /// Its keyword.
    pub fn name(&self) -> &'static str {
        Op::Normalization(*self).keyword()
    }
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

impl LayerSpec {
    /// The parameter prefix of this layer within its chain: its declared name, or
    /// `<keyword>_<id>` for an unnamed layer that holds parameters (or branches); `None` for an
    /// unnamed stateless op. The one place default names are made.
    pub fn field_name(&self) -> Option<String> {
        self.name.clone().or_else(|| {
            (self.op.has_parameters() || self.op.is_block()).then(|| format!("{}_{}", self.op.keyword(), self.id.0))
        })
    }
}

impl Step {
    /// The keyword of the declared op this step runs (`conv`, `relu`, ...); `None` for an
    /// inserted fixed scalar or a block.
    pub fn op_keyword(&self) -> Option<&'static str> {
        match &self.op {
            StepOp::Declared { op, .. } => Some(op.keyword()),
            _ => None,
        }
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

    pub fn same_gradient(_: &Op, _: &Step, gradient: &Covariance) -> Covariance {
        gradient.clone()
    }

    /// For kinds that never reach the planner (rejected, or expanded into branches).
    pub fn unplanned_gradient(op: &Op, _: &Step, gradient: &Covariance) -> Covariance {
        debug_assert!(false, "`{}` never reaches the planner", op.keyword());
        gradient.clone()
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
mod tests;
