//! Residual blocks: the section 11.1 bottleneck spelled out into plain layers, and the check
//! that a block's two branches end in the same shape.

use crate::diagnostic::{Diagnostics, LayerField, Location, Rule};
use crate::spec::Op;
use crate::spec::{LayerId, LayerSpec, Residual, Shape};

/// The two ends of a residual block disagree: point at both and suggest a shortcut that fits.
pub(crate) fn report_branch_mismatch(
    layer: &LayerSpec,
    block: &Residual,
    input: Shape,
    main_end: Shape,
    shortcut_end: Shape,
    diagnostics: &mut Diagnostics,
) {
    let suggestion = match (input, main_end) {
        (Shape::Image { height, channels, .. }, Shape::Image { height: out_h, channels: out_c, .. }) => {
            let mut layers = Vec::new();
            if out_h > 0 && height > out_h && height % out_h == 0 {
                layers.push(format!("avg_pool({})", height / out_h));
            }
            if out_c != channels || layers.is_empty() {
                layers.push(format!("conv({out_c}, kernel = 1)"));
            }
            format!("shortcut {{ {} }}", layers.join(", "))
        }
        (_, Shape::Vector { features }) => format!("shortcut {{ linear({features}) }}"),
        (_, Shape::Image { channels, .. }) => format!("shortcut {{ conv({channels}, kernel = 1) }}"),
    };
    let what = if block.shortcut.is_some() { "the shortcut" } else { "the identity shortcut" };
    diagnostics.push(Rule::BranchShapes,
        Location::layer(layer.id, LayerField::MainEnd),
        format!(
            "the main branch of this residual block ends in {main_end} but {what} gives {shortcut_end}; the branches are added, so they must agree: write `{suggestion}`"
        ),
    );
    let shortcut_location = match block.shortcut.as_deref().and_then(<[LayerSpec]>::last) {
        Some(last) => Location::layer(last.id, LayerField::Kind),
        None => Location::layer(layer.id, LayerField::ShortcutEnd),
    };
    diagnostics.push(
        Rule::BranchShapes,
        shortcut_location,
        format!("{what} ends in {shortcut_end} here, the main branch in {main_end}"),
    );
}

/// The pre-activation bottleneck of section 11.1, from the input's channels to `out` channels.
///
/// Main branch: for each of the 1x1 (to `width`), 3x3 (`width`) and 1x1 (to `out`) convolutions,
/// ReLU, a standalone bias and the convolution (the calculus inserts the fixed scalar between the
/// ReLU and the bias); then a learnable scalar. Downsampling by `stride` uses average pooling
/// before the 3x3 convolution: a 3x3 convolution of stride 2 breaks the stride rule of Table 1.
/// Shortcut: the identity when the shape is kept, else `avg_pool(stride)`, a bias and a 1x1
/// convolution to `out` channels.
///
/// The paper prints fixed constants for this block (`sqrt(2/beta)`, `sqrt(2/(3 beta))`,
/// `sqrt(m/(beta n))`, ...), derived from eq. (6) for its own normalization of `c`. Here none is
/// written down: the same rule that places every other fixed scalar (bias balance before each
/// weight layer, `E[F(x)^2] = E[x^2]` at the branch end) computes them, with the mean shift of
/// pooling after a ReLU included. The report shows the values; the tests check them by
/// measurement.
pub(crate) fn bottleneck_branches(
    id: LayerId,
    input: Shape,
    out: usize,
    width: usize,
    stride: usize,
    diagnostics: &mut Diagnostics,
) -> Option<(Vec<LayerSpec>, Vec<LayerSpec>)> {
    let Shape::Image { channels, height, width: image_width } = input else {
        diagnostics.push(
            Rule::BottleneckShape,
            Location::layer(id, LayerField::Kind),
            format!("`bottleneck` needs an image input [C, H, W], but its input is {input}"),
        );
        return None;
    };
    if out == 0 || width == 0 {
        return None;
    }
    if stride == 0 || height % stride != 0 || image_width % stride != 0 {
        diagnostics.push(Rule::BottleneckShape,
            Location::layer(id, LayerField::Stride),
            format!("a bottleneck of stride {stride} needs a spatial size it divides, got {height}x{image_width}; use `stride = 1` or `stride = 2` on an even size"),
        );
        return None;
    }
    let main = bottleneck_main(out, width, stride);
    let shortcut = if stride == 1 && channels == out {
        Vec::new()
    } else {
        let mut layers = Vec::new();
        if stride > 1 {
            layers.push(LayerSpec::new(Op::AvgPool2d { kernel: stride, stride }));
        }
        layers.push(LayerSpec::named("bias", Op::Bias));
        layers.push(LayerSpec::named("conv", conv(out, 1, 0)));
        layers
    };
    Some((main, shortcut))
}

fn conv(out_channels: usize, kernel: usize, padding: usize) -> Op {
    Op::Conv2d { out_channels, kernel, stride: 1, padding, bias: false, groups: 1 }
}

/// The bottleneck's main branch, which does not depend on its input shape.
pub(crate) fn bottleneck_main(out: usize, width: usize, stride: usize) -> Vec<LayerSpec> {
    let mut main = vec![
        LayerSpec::new(Op::Relu),
        LayerSpec::named("bias1", Op::Bias),
        LayerSpec::named("conv1", conv(width, 1, 0)),
        LayerSpec::new(Op::Relu),
    ];
    if stride > 1 {
        main.push(LayerSpec::new(Op::AvgPool2d { kernel: stride, stride }));
    }
    main.extend([
        LayerSpec::named("bias2", Op::Bias),
        LayerSpec::named("conv2", conv(width, 3, 1)),
        LayerSpec::new(Op::Relu),
        LayerSpec::named("bias3", Op::Bias),
        LayerSpec::named("conv3", conv(out, 1, 0)),
        LayerSpec::named("scale", Op::Scalar),
    ]);
    main
}
