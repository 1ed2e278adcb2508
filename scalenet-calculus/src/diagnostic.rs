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
    Kernel,
    Stride,
    Padding,
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

/// A network-level option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkField {
    /// The declaration as a whole (e.g. `input` is missing).
    Declaration,
    Input,
    Init,
    TypicalKernel,
    OutputStd,
}

/// Where a diagnostic points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    Network(NetworkField),
    Layer {
        id: LayerId,
        field: LayerField,
    },
}

impl Location {
    pub fn layer(id: LayerId, field: LayerField) -> Self {
        Location::Layer { id, field }
    }
}

/// One rule broken by a declaration: where, and a lowercase sentence that names the fix.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub location: Location,
    pub message: String,
}

impl Diagnostic {
    pub fn new(location: Location, message: impl Into<String>) -> Self {
        Diagnostic { location, message: message.into() }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Location::Network(field) => write!(f, "{:?}: {}", field, self.message),
            Location::Layer { id, field } => {
                write!(f, "layer {} ({field:?}): {}", id.0, self.message)
            }
        }
    }
}

impl std::error::Error for Diagnostic {}

/// All diagnostics of one declaration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, location: Location, message: impl Into<String>) {
        self.0.push(Diagnostic::new(location, message));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

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
