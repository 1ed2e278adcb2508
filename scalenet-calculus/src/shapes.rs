//! Shape inference: every declared layer's input and output shape, from `input` on, with
//! bottlenecks spelled out (see [`crate::blocks`]).
//!
//! Shapes are inferred as PyTorch would compute them, but stricter: an output size must be an
//! exact integer (PyTorch floors and silently drops rows, which breaks the assumption that every
//! input entry feeds the next layer). Inference stops at the first shape error, since later
//! shapes are unknown, and before the first layer that broke another rule, so that one mistake is
//! reported once. A residual block's branches must end in the same shape.

use crate::blocks;
use crate::diagnostic::{Diagnostics, LayerField, Location, Rule};
use crate::spec::Op;
use crate::spec::{LayerId, LayerSpec, Shape, MAX_ELEMENTS};

/// A declared layer with its inferred shapes; blocks hold their branches.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub id: LayerId,
    /// The parameter prefix within its chain ([`LayerSpec::field_name`]).
    pub name: Option<String>,
    pub input: Shape,
    pub output: Shape,
    pub kind: NodeKind,
}

#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    Leaf(Op),
    Block { keyword: &'static str, alpha: f64, beta: f64, main: Vec<Node>, shortcut: Vec<Node> },
}

/// Infers the shapes of `layers` from `input`, skipping nothing: `None` at the first shape error
/// or at a layer listed in `broken`.
pub(crate) fn infer_chain(
    layers: &[LayerSpec],
    input: Shape,
    broken: &[LayerId],
    diagnostics: &mut Diagnostics,
) -> Option<Vec<Node>> {
    let mut shape = input;
    let mut nodes = Vec::with_capacity(layers.len());
    for layer in layers {
        if broken.contains(&layer.id) {
            return None;
        }
        let node = match &layer.op {
            Op::Residual(block) => {
                let (alpha, beta) = block.weights()?;
                let main = infer_chain(&block.main, shape, broken, diagnostics)?;
                let main_end = main.last().map_or(shape, |n| n.output);
                let shortcut = infer_chain(block.shortcut.as_deref().unwrap_or_default(), shape, broken, diagnostics)?;
                let shortcut_end = shortcut.last().map_or(shape, |n| n.output);
                if main_end != shortcut_end {
                    blocks::report_branch_mismatch(layer, block, shape, main_end, shortcut_end, diagnostics);
                    return None;
                }
                let kind = NodeKind::Block { keyword: "residual", alpha, beta, main, shortcut };
                Node { id: layer.id, name: layer.field_name(), input: shape, output: main_end, kind }
            }
            &Op::Bottleneck { out_channels, width, stride, beta } => {
                let (main, shortcut) =
                    blocks::bottleneck_branches(layer.id, shape, out_channels, width, stride, diagnostics)?;
                // Spelled-out layers carry the bottleneck's id: any error in them is the bottleneck's.
                let resolve = |layers: &[LayerSpec], diagnostics: &mut Diagnostics| {
                    let mut nodes = Vec::new();
                    let mut current = shape;
                    for inner in layers {
                        let output = (inner.op.def().shape)(&inner.op, current, layer.id, diagnostics)?;
                        check_sizes(&inner.op, current, output, layer.id, diagnostics)?;
                        let kind = NodeKind::Leaf(inner.op.clone());
                        nodes.push(Node { id: layer.id, name: inner.name.clone(), input: current, output, kind });
                        current = output;
                    }
                    Some(nodes)
                };
                let main = resolve(&main, diagnostics)?;
                let shortcut = resolve(&shortcut, diagnostics)?;
                let output = main.last().map_or(shape, |n| n.output);
                let alpha = (1.0 - beta * beta).max(0.0).sqrt();
                let kind = NodeKind::Block { keyword: "bottleneck", alpha, beta, main, shortcut };
                Node { id: layer.id, name: layer.field_name(), input: shape, output, kind }
            }
            op => {
                let output = (op.def().shape)(op, shape, layer.id, diagnostics)?;
                check_sizes(op, shape, output, layer.id, diagnostics)?;
                Node { id: layer.id, name: layer.field_name(), input: shape, output, kind: NodeKind::Leaf(op.clone()) }
            }
        };
        shape = node.output;
        nodes.push(node);
    }
    Some(nodes)
}

/// The output and, for a weight layer, the weight hold at most [`MAX_ELEMENTS`] elements.
fn check_sizes(op: &Op, input: Shape, output: Shape, id: LayerId, diagnostics: &mut Diagnostics) -> Option<()> {
    if output.checked_numel().is_none_or(|n| n > MAX_ELEMENTS) {
        diagnostics.push(
            Rule::SizeLimit,
            Location::layer(id, LayerField::Kind),
            format!(
                "this layer's output {output} has more than 2^31 elements per sample, beyond what a tensor can hold; use fewer channels or downsample before it"
            ),
        );
        return None;
    }
    if let Some(kernel) = op.weight_kernel() {
        let weight =
            [output.channels(), input.channels(), kernel, kernel].into_iter().try_fold(1usize, usize::checked_mul);
        if weight.is_none_or(|n| n > MAX_ELEMENTS) {
            diagnostics.push(
                Rule::SizeLimit,
                Location::layer(id, LayerField::Size),
                format!(
                    "the weight of this layer would have {} x {} x {kernel} x {kernel} elements, more than the 2^31 a tensor can hold; use fewer channels or features on either side",
                    output.channels(),
                    input.channels()
                ),
            );
            return None;
        }
    }
    Some(())
}
