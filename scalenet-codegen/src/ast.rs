//! The declaration as written, every value kept beside its span so that an error underlines the
//! token at fault.

use proc_macro2::Span;
use syn::{Attribute, Ident, Visibility};

/// A literal argument: `6`, `0.5`, `-0.1`, `false`.
#[derive(Clone, Copy)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

#[derive(Clone, Copy)]
pub enum ValueKind {
    Int(u64),
    Float(f64),
    Bool(bool),
    NegativeInt(u64),
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self.kind {
            ValueKind::Int(v) => Some(v as f64),
            ValueKind::NegativeInt(v) => Some(-(v as f64)),
            ValueKind::Float(v) => Some(v),
            ValueKind::Bool(_) => None,
        }
    }
}

/// `name = value` or a positional `value` inside a layer's parentheses.
pub struct Arg {
    pub key: Option<Ident>,
    pub value: Value,
}

pub struct Layer {
    pub docs: Vec<Attribute>,
    /// `#[allow(unscaled)]`.
    pub allow_unscaled: bool,
    pub name: Option<Ident>,
    pub kind: Ident,
    /// `None` when written without parentheses.
    pub args: Option<Vec<Arg>>,
    /// The braced branches of a `residual` block.
    pub body: Option<Body>,
}

/// `{ main layers } shortcut { shortcut layers }`.
pub struct Body {
    pub main: Vec<Layer>,
    /// The `shortcut` keyword and its layers; `None` is the identity.
    pub shortcut: Option<(Ident, Vec<Layer>)>,
}

pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

#[derive(Default)]
pub struct Options {
    pub input: Option<Spanned<Vec<usize>>>,
    /// `input:` was written, even if its value did not parse (that error was reported).
    pub input_written: bool,
    pub init: Option<Spanned<String>>,
    pub typical_kernel: Option<Spanned<usize>>,
    pub output_std: Option<Spanned<f64>>,
    pub fixed_scalars: Option<Spanned<bool>>,
    pub branch_scaling: Option<Spanned<bool>>,
    pub spatial_coherence: Option<Spanned<bool>>,
    pub centred_weights: Option<Spanned<bool>>,
    pub varying_output_std: Option<Spanned<bool>>,
    pub precision: Option<Spanned<String>>,
}

pub struct Network {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub ident: Ident,
    pub options: Options,
    pub layers: Vec<Layer>,
}
