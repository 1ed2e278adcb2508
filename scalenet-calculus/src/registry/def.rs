//! The shape of a registry entry: [`OpDef`] and the argument, role and runtime types it is made of.

use super::Op;
use crate::coherence::Covariance;
use crate::diagnostic::{Diagnostics, LayerField};
use crate::moments::{Moments, Transfer};
use crate::plan::Step;
use crate::spec::{LayerId, LayerSpec, Shape};

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

/// What an op does to a map's border profiles, the second moment by row and column relative to the
/// map's mean ([`crate::borders`]): every kind says which, so a new kind cannot inherit a
/// plausible but wrong rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BorderRule {
    /// A window over the map (convolution, average pooling): rows and columns mix through it and
    /// its zero padding.
    Window,
    /// Position by position (activations, dropout, `scale`, scalars, biases): the profile passes
    /// unchanged, forward and backward.
    Pointwise,
    /// Leaves the map (flatten, global pooling, a linear layer): no profile after it, and the
    /// gradient coming back is alike at every position.
    Collapses,
    /// Holds branches, which the borders pass follows itself.
    Branches,
    /// Never planned: a rule rejects it.
    NotPlanned,
}

/// What the generated module calls for an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Expanded from the step's parameters (weights, scalars, biases).
    Parameters,
    /// `let xs = scalenet::__private::ops::<function>(&xs, <args in params order>[, train])?;`
    ///
    /// `homogeneous`: `f(a x) = a f(x)` for every `a > 0` (ReLU, pooling, dropout, reshapes), so a
    /// fixed multiplier before the op may be applied after it instead: generated code carries the
    /// calculus's fixed scalars through such ops into the next weight layer's matrix product.
    Call {
        /// The function of `scalenet::__private::ops`.
        function: &'static str,
        /// Whether it takes `train` (dropout).
        train: bool,
        /// Whether `f(a x) = a f(x)` for every `a > 0`.
        homogeneous: bool,
    },
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
    /// This value.
    Value(ArgValue),
    /// The value of the argument at this index (`avg_pool`'s stride is its kernel).
    SameAs(usize),
}

/// One argument a layer kind accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Param {
    /// The name a declaration writes (`kernel`), or that messages use for a positional one.
    pub name: &'static str,
    /// Written without its name, in order (`conv(16, ..)`); otherwise `name = value`.
    pub positional: bool,
    /// Its type.
    pub kind: ParamKind,
    /// What it is when not given.
    pub default: ParamDefault,
    /// The part of the declaration a diagnostic about this argument points at.
    pub field: LayerField,
    /// What it means, for messages: "output channels".
    pub meaning: &'static str,
    /// How a message asks for it when it is missing: "its number of output channels first".
    pub missing: &'static str,
}

impl Param {
    /// A required argument written without its name.
    pub const fn positional(name: &'static str, kind: ParamKind, field: LayerField) -> Self {
        Param { name, positional: true, kind, default: ParamDefault::Required, field, meaning: name, missing: name }
    }

    /// A required argument written `name = value`.
    pub const fn named(name: &'static str, kind: ParamKind, field: LayerField) -> Self {
        Param { name, positional: false, kind, default: ParamDefault::Required, field, meaning: name, missing: name }
    }

    /// The same argument with a default.
    pub const fn default(mut self, default: ParamDefault) -> Self {
        self.default = default;
        self
    }

    /// The same argument with the words messages use for it.
    pub const fn meaning(mut self, meaning: &'static str, missing: &'static str) -> Self {
        self.meaning = meaning;
        self.missing = missing;
        self
    }
}

/// The arguments a layer kind accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Params {
    /// These arguments, in order: positional ones first.
    List(&'static [Param]),
    /// Any arguments, ignored: kinds that are rejected whatever they are given.
    Ignored,
}

/// A literal argument value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArgValue {
    /// A size: channels, kernel, stride, padding.
    Count(usize),
    /// A real number.
    Number(f64),
    /// `true` or `false`.
    Flag(bool),
}

impl ArgValue {
    /// The value as a number, for counts and numbers.
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

    /// Argument `index` as a size (0 when absent).
    pub fn count(&self, index: usize) -> usize {
        match self.0.get(index).copied().flatten() {
            Some(ArgValue::Count(v)) => v,
            Some(ArgValue::Number(v)) => v as usize,
            _ => 0,
        }
    }

    /// Argument `index` as a number (0 when absent).
    pub fn number(&self, index: usize) -> f64 {
        self.optional_number(index).unwrap_or(0.0)
    }

    /// Argument `index` as a number, if given.
    pub fn optional_number(&self, index: usize) -> Option<f64> {
        self.0.get(index).copied().flatten().and_then(|v| v.as_f64())
    }

    /// Argument `index` as a flag (`false` when absent).
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
    /// What a declaration writes: `conv`.
    pub keyword: &'static str,
    /// Other spellings (`swish` for `silu`).
    pub aliases: &'static [&'static str],
    /// A complete use, for messages: `conv(16, kernel = 3, padding = 1)`.
    pub example: &'static str,
    /// The arguments it accepts.
    pub params: Params,
    /// Takes braced branches (`residual { .. } shortcut { .. }`).
    pub branches: bool,
    /// What it does, for the planner and the rules.
    pub role: Role,
    /// The op from its checked arguments.
    pub build: fn(&Args) -> Op,
    /// The inverse of `build`: the op's arguments in `params` order.
    pub args: fn(&Op) -> Vec<Option<ArgValue>>,
    /// The rules of [`crate::rules`] that apply to this kind.
    pub rules: &'static [LayerRule],
    /// Its output shape from its input shape.
    pub shape: ShapeRule,
    /// Moments through the op (Appendix B); blocks are combined by the planner.
    pub transfer: fn(&Op, &Step, Moments) -> Transfer,
    /// The covariance between positions of the gradient at the op's input, from the one at its
    /// output (see [`crate::coherence`]).
    pub gradient: fn(&Op, &Step, &Covariance) -> Covariance,
    /// The op column of the report.
    pub describe: fn(&Op, &Step) -> String,
    /// What the generated code does for it.
    pub runtime: Runtime,
    /// What it does to the profiles of image borders (see [`crate::borders`]).
    pub borders: BorderRule,
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
