//! The rules a declaration must follow for the calculus to hold, one function per rule.
//!
//! Each rule states what it rejects and why, citing the paper (Defazio & Bottou, 2022). Rules
//! never stop at the first error: every layer is checked so that one compile reports everything.

use crate::diagnostic::{Diagnostics, LayerField, Location, NetworkField};
use crate::spec::{LayerSpec, NetworkSpec, Op, Shape};

/// A declared layer with its pre-order index and inferred shapes; blocks hold their branches.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub index: usize,
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

/// Runs every rule on `spec`. Returns the declared layers with their shapes when shapes could be
/// inferred all the way through.
pub(crate) fn check(spec: &NetworkSpec, diagnostics: &mut Diagnostics) -> Option<Vec<Node>> {
    check_network_options(spec, diagnostics);
    let mut broken = Vec::new();
    let mut next_index = 0;
    check_layers(&spec.layers, &mut next_index, &mut broken, diagnostics);
    let input = spec.input?;
    if input.dims().contains(&0) {
        return None;
    }
    let mut next_index = 0;
    infer_chain(&spec.layers, input, &mut next_index, &broken, diagnostics)
}

/// Applies the per-layer rules to `layers` and, recursively, to blocks' branches; records the
/// indices of layers that broke a rule.
fn check_layers(layers: &[LayerSpec], next_index: &mut usize, broken: &mut Vec<usize>, diagnostics: &mut Diagnostics) {
    for layer in layers {
        let index = *next_index;
        *next_index += 1;
        let before = diagnostics.0.len();
        reject_max_pooling(index, layer, diagnostics);
        reject_mismatched_strides(index, layer, diagnostics);
        reject_non_homogeneous_activations(index, layer, diagnostics);
        reject_normalization(index, layer, diagnostics);
        check_positive_sizes(index, layer, diagnostics);
        check_dropout_probability(index, layer, diagnostics);
        check_leaky_relu_slope(index, layer, diagnostics);
        check_scale_factor(index, layer, diagnostics);
        check_residual_weights(index, layer, diagnostics);
        if diagnostics.0.len() > before {
            broken.push(index);
        }
        if let Op::Residual(block) = &layer.op {
            check_layers(&block.main, next_index, broken, diagnostics);
            check_layers(block.shortcut.as_deref().unwrap_or_default(), next_index, broken, diagnostics);
        }
    }
}

/// Counts `layers` and the layers inside their blocks, as `check_layers` numbers them.
fn count_layers(layers: &[LayerSpec]) -> usize {
    layers
        .iter()
        .map(|layer| match &layer.op {
            Op::Residual(block) => {
                1 + count_layers(&block.main) + count_layers(block.shortcut.as_deref().unwrap_or_default())
            }
            _ => 1,
        })
        .sum()
}

/// `input` is required: every moment and every fan-in follows from the input shape. The target
/// output std must be a positive number (section 7) and the typical kernel `k*` of `c = 2/k*`
/// (section 6.2) a positive size.
fn check_network_options(spec: &NetworkSpec, diagnostics: &mut Diagnostics) {
    match spec.input {
        None => diagnostics.push(
            Location::Network(NetworkField::Declaration),
            "the network has no `input`; declare its per-sample shape, e.g. `input: [3, 32, 32]` or `input: [784]`",
        ),
        Some(shape) if shape.dims().contains(&0) => diagnostics.push(
            Location::Network(NetworkField::Input),
            "input dimensions must be positive; every dimension of `input` needs at least one element",
        ),
        Some(_) => {}
    }
    if !(spec.output_std.is_finite() && spec.output_std > 0.0) {
        diagnostics.push(
            Location::Network(NetworkField::OutputStd),
            "`output_std` must be a positive number; the paper recommends 0.01 to 0.1 (section 7)",
        );
    }
    if spec.typical_kernel == Some(0) {
        diagnostics.push(
            Location::Network(NetworkField::TypicalKernel),
            "`typical_kernel` must be at least 1; it is the k* of c = 2/k* (section 6.2)",
        );
    }
}

/// Max pooling does not preserve the activation scaling factor (Table 1): its forward pass keeps
/// the largest entry and its backward pass routes the whole gradient to it, so neither second
/// moment follows a rule the calculus can propagate. Average pooling, or a convolution whose
/// stride equals its kernel, downsamples with a known scaling.
fn reject_max_pooling(index: usize, layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    if let Op::MaxPool2d { kernel, .. } = layer.op {
        diagnostics.push(
            Location::layer(index, LayerField::Kind),
            format!(
                "max pooling does not preserve the scaling factor (Table 1); use `avg_pool({kernel})` or a strided `conv(.., kernel = {kernel}, stride = {kernel})`"
            ),
        );
    }
}

/// Strided convolutions and average pooling maintain scaling only when the stride equals the
/// kernel (Table 1, Appendix B): then every input entry feeds exactly one output window and the
/// backward second moment scales by a known factor. A convolution with stride 1 is the ordinary
/// case and is always fine.
fn reject_mismatched_strides(index: usize, layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    match layer.op {
        Op::Conv2d { kernel, stride, .. } if stride > 1 && kernel > 0 && stride != kernel => diagnostics.push(
            Location::layer(index, LayerField::Stride),
            format!(
                "a strided convolution maintains scaling only when its stride equals its kernel (Table 1); use `stride = {kernel}` or `stride = 1`"
            ),
        ),
        Op::AvgPool2d { kernel, stride } if stride != kernel && stride > 0 && kernel > 0 => diagnostics.push(
            Location::layer(index, LayerField::Stride),
            format!(
                "average pooling maintains scaling only when its stride equals its kernel (Table 1); write `avg_pool({kernel})`"
            ),
        ),
        _ => {}
    }
}

/// The activation scaling factor is preserved by positively homogeneous activations of degree 1
/// (ReLU, leaky ReLU; Table 1 and Appendix B) because they scale the forward and backward second
/// moments by the same factor. Sigmoid, tanh, GELU, SiLU, ELU, softplus and softmax do not; their
/// effect depends on the scale of their input. `#[allow(unscaled)]` accepts one knowingly: the
/// calculus then treats it as the identity (its linear regime) and the report flags it.
fn reject_non_homogeneous_activations(index: usize, layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    if let Op::Unscaled(activation) = layer.op {
        if !layer.allow_unscaled {
            diagnostics.push(
                Location::layer(index, LayerField::Kind),
                format!(
                    "`{}` is not positively homogeneous, so it does not preserve the scaling factor (Table 1); use `relu` or `leaky_relu(slope)`, or write `#[allow(unscaled)]` before it to keep it knowingly",
                    activation.name()
                ),
            );
        }
    }
}

/// The calculus designs networks that are well conditioned without normalization (sections 1,
/// 11): normalization layers rescale activations by statistics of the batch, which replaces the
/// moments the calculus propagates. Use fixed scalars and residual weighting instead.
fn reject_normalization(index: usize, layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    if let Op::Normalization(norm) = layer.op {
        diagnostics.push(
            Location::layer(index, LayerField::Kind),
            format!(
                "`{}` normalizes away the moments the calculus designs; remove it: the geometric init and the inserted fixed scalars condition the network without normalization (section 11)",
                norm.name()
            ),
        );
    }
}

/// Channels, features, kernels and strides count things: zero of them is an empty layer.
fn check_positive_sizes(index: usize, layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    let mut require = |value: usize, field: LayerField, what: &str| {
        if value == 0 {
            diagnostics.push(Location::layer(index, field), format!("{what} must be at least 1"));
        }
    };
    match layer.op {
        Op::Conv2d { out_channels, kernel, stride, .. } => {
            require(out_channels, LayerField::Size, "the number of output channels");
            require(kernel, LayerField::Kernel, "the kernel size");
            require(stride, LayerField::Stride, "the stride");
        }
        Op::Linear { out_features, .. } => require(out_features, LayerField::Size, "the number of output features"),
        Op::Bottleneck { out_channels, stride, .. } => {
            require(out_channels, LayerField::Size, "the number of output channels");
            require(stride, LayerField::Stride, "the stride");
        }
        Op::AvgPool2d { kernel, stride } | Op::MaxPool2d { kernel, stride } => {
            require(kernel, LayerField::Size, "the pooling kernel");
            require(stride, LayerField::Stride, "the stride");
        }
        _ => {}
    }
}

/// Dropout keeps each entry with probability 1 - p (Appendix B); p = 1 keeps nothing and a
/// probability outside [0, 1) has no meaning.
fn check_dropout_probability(index: usize, layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    if let Op::Dropout { p } = layer.op {
        if !(0.0..1.0).contains(&p) {
            diagnostics.push(
                Location::layer(index, LayerField::Probability),
                format!("dropout probability must lie in [0, 1), got {p:?}; e.g. `dropout(0.5)`"),
            );
        }
    }
}

/// Leaky ReLU `max(x, a x)` is positively homogeneous for any a, but the gain 2/(1 + a^2) of its
/// initialization assumes 0 <= a < 1, the leaky regime; a negative slope makes it a different,
/// non-monotone function.
fn check_leaky_relu_slope(index: usize, layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    if let Op::LeakyRelu { slope } = layer.op {
        if !(slope.is_finite() && (0.0..1.0).contains(&slope)) {
            diagnostics.push(
                Location::layer(index, LayerField::Slope),
                format!("the leaky relu slope must lie in [0, 1), got {slope:?}; e.g. `leaky_relu(0.01)`"),
            );
        }
    }
}

/// A fixed scalar multiplies both second moments by f^2 (Appendix B); zero erases the signal and a
/// non-finite factor is not a number.
fn check_scale_factor(index: usize, layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    if let Op::Scale { factor } = layer.op {
        if !(factor.is_finite() && factor != 0.0) {
            diagnostics.push(
                Location::layer(index, LayerField::Factor),
                format!("a scale factor must be a finite nonzero number, got {factor:?}"),
            );
        }
    }
}

/// A residual block adds its branches, weighted so that `alpha^2 + beta^2 = 1` keeps the second
/// moment (section 11, following Shao et al.): `beta` in (0, 1], `alpha` in [0, 1). Give one of
/// them; both must agree.
fn check_residual_weights(index: usize, layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    let (alpha, beta) = match &layer.op {
        Op::Residual(block) => (block.alpha, block.beta),
        Op::Bottleneck { beta, width, .. } => {
            if *width == 0 {
                diagnostics.push(Location::layer(index, LayerField::Width), "the bottleneck width must be at least 1");
            }
            (None, Some(*beta))
        }
        _ => return,
    };
    let at = |field| Location::layer(index, field);
    if let Some(beta) = beta {
        if !(beta > 0.0 && beta <= 1.0) {
            diagnostics
                .push(at(LayerField::Beta), format!("`beta` must lie in (0, 1], got {beta:?}; e.g. `beta = 0.5`"));
        }
    }
    if let Some(alpha) = alpha {
        if !(0.0..1.0).contains(&alpha) {
            diagnostics.push(at(LayerField::Alpha), format!("`alpha` must lie in [0, 1), got {alpha:?}"));
        }
    }
    match (alpha, beta) {
        (None, None) => diagnostics.push(
            at(LayerField::Kind),
            "a residual block needs its branch weight; write `residual(beta = 0.5) { .. }` (alpha = sqrt(1 - beta^2) follows)",
        ),
        (Some(alpha), Some(beta)) if (alpha * alpha + beta * beta - 1.0).abs() > 1e-6 => diagnostics.push(
            at(LayerField::Alpha),
            format!(
                "alpha^2 + beta^2 must be 1 to keep the second moment (section 11), got {:.4}; give only `beta = {beta}` and alpha = {:.4} follows",
                alpha * alpha + beta * beta,
                (1.0 - beta * beta).max(0.0).sqrt()
            ),
        ),
        _ => {}
    }
}

/// Shapes are inferred from `input` layer by layer, as PyTorch would compute them, but stricter:
/// an output size must be an exact integer (PyTorch floors and silently drops rows, which breaks
/// the assumption that every input entry feeds the next layer), and average pooling must tile its
/// input exactly (candle's pooling backward is wrong otherwise). Inference stops at the first
/// shape error, since later shapes are unknown, and before the first layer that broke another
/// rule, so that one mistake is reported once. A residual block's branches must end in the same
/// shape.
fn infer_chain(
    layers: &[LayerSpec],
    input: Shape,
    next_index: &mut usize,
    broken: &[usize],
    diagnostics: &mut Diagnostics,
) -> Option<Vec<Node>> {
    let mut shape = input;
    let mut nodes = Vec::with_capacity(layers.len());
    for layer in layers {
        let index = *next_index;
        *next_index += 1;
        if broken.contains(&index) {
            return None;
        }
        let node = match &layer.op {
            Op::Residual(block) => {
                let (alpha, beta) = block.weights()?;
                let main = infer_chain(&block.main, shape, next_index, broken, diagnostics)?;
                let main_end = main.last().map_or(shape, |n| n.output);
                let declared_shortcut = block.shortcut.as_deref().unwrap_or_default();
                let shortcut = infer_chain(declared_shortcut, shape, next_index, broken, diagnostics)?;
                let shortcut_end = shortcut.last().map_or(shape, |n| n.output);
                if main_end != shortcut_end {
                    report_branch_mismatch(index, block, shape, main_end, shortcut_end, diagnostics);
                    return None;
                }
                Node {
                    index,
                    name: layer.name.clone(),
                    input: shape,
                    output: main_end,
                    kind: NodeKind::Block { keyword: "residual", alpha, beta, main, shortcut },
                }
            }
            Op::Bottleneck { out_channels, width, stride, beta } => {
                let (main, shortcut) = bottleneck_branches(index, shape, *out_channels, *width, *stride, diagnostics)?;
                // Generated layers carry the bottleneck's index: any error in them is the bottleneck's.
                let resolve = |layers: &[LayerSpec], diagnostics: &mut Diagnostics| {
                    let mut nodes = Vec::new();
                    let mut current = shape;
                    for layer in layers {
                        let output = output_shape(index, &layer.op, current, diagnostics)?;
                        nodes.push(Node {
                            index,
                            name: layer.name.clone(),
                            input: current,
                            output,
                            kind: NodeKind::Leaf(layer.op.clone()),
                        });
                        current = output;
                    }
                    Some(nodes)
                };
                let main = resolve(&main, diagnostics)?;
                let shortcut = resolve(&shortcut, diagnostics)?;
                Node {
                    index,
                    name: layer.name.clone(),
                    input: shape,
                    output: main.last().map_or(shape, |n| n.output),
                    kind: NodeKind::Block {
                        keyword: "bottleneck",
                        alpha: (1.0 - beta * beta).max(0.0).sqrt(),
                        beta: *beta,
                        main,
                        shortcut,
                    },
                }
            }
            op => {
                let output = output_shape(index, op, shape, diagnostics)?;
                Node { index, name: layer.name.clone(), input: shape, output, kind: NodeKind::Leaf(op.clone()) }
            }
        };
        shape = node.output;
        nodes.push(node);
    }
    Some(nodes)
}

/// The two ends of a residual block disagree: point at both and suggest a shortcut that fits.
fn report_branch_mismatch(
    index: usize,
    block: &crate::spec::Residual,
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
    diagnostics.push(
        Location::layer(index, LayerField::MainEnd),
        format!(
            "the main branch of this residual block ends in {main_end} but {what} gives {shortcut_end}; the branches are added, so they must agree: write `{suggestion}`"
        ),
    );
    // Pre-order index of the shortcut's last layer: the block, its main branch, the shortcut's
    // earlier layers (nested blocks included).
    let shortcut = block.shortcut.as_deref().unwrap_or_default();
    let shortcut_index =
        index + 1 + count_layers(&block.main) + count_layers(&shortcut[..shortcut.len().saturating_sub(1)]);
    let shortcut_location = if block.shortcut.as_ref().is_some_and(|s| !s.is_empty()) {
        Location::layer(shortcut_index, LayerField::Kind)
    } else {
        Location::layer(index, LayerField::ShortcutEnd)
    };
    diagnostics.push(shortcut_location, format!("{what} ends in {shortcut_end} here, the main branch in {main_end}"));
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
    index: usize,
    input: Shape,
    out: usize,
    width: usize,
    stride: usize,
    diagnostics: &mut Diagnostics,
) -> Option<(Vec<LayerSpec>, Vec<LayerSpec>)> {
    let Shape::Image { channels, height, width: image_width } = input else {
        diagnostics.push(
            Location::layer(index, LayerField::Kind),
            format!("`bottleneck` needs an image input [C, H, W], but its input is {input}"),
        );
        return None;
    };
    if out == 0 || width == 0 {
        return None;
    }
    if stride == 0 || height % stride != 0 || image_width % stride != 0 {
        diagnostics.push(
            Location::layer(index, LayerField::Stride),
            format!("a bottleneck of stride {stride} needs a spatial size it divides, got {height}x{image_width}; use `stride = 1` or `stride = 2` on an even size"),
        );
        return None;
    }
    let conv = |out_channels, kernel, padding| Op::Conv2d { out_channels, kernel, stride: 1, padding, bias: false };
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

/// Output size of a window of `kernel` sliding by `stride` over `size` padded by `padding`.
fn window_output(size: usize, kernel: usize, stride: usize, padding: usize) -> Result<usize, WindowError> {
    let padded = size + 2 * padding;
    if kernel > padded {
        return Err(WindowError::KernelTooLarge { padded });
    }
    if !(padded - kernel).is_multiple_of(stride) {
        return Err(WindowError::NotIntegral { padded });
    }
    Ok((padded - kernel) / stride + 1)
}

enum WindowError {
    KernelTooLarge { padded: usize },
    NotIntegral { padded: usize },
}

fn output_shape(index: usize, op: &Op, input: Shape, diagnostics: &mut Diagnostics) -> Option<Shape> {
    let at = |field| Location::layer(index, field);
    let needs_image = |diagnostics: &mut Diagnostics| {
        diagnostics.push(
            at(LayerField::Kind),
            format!(
                "`{}` needs an image input [C, H, W], but its input is the vector {input}; move it before `flatten` or declare `input` as [C, H, W]",
                op.keyword()
            ),
        );
    };
    match *op {
        Op::Conv2d { out_channels, kernel, stride, padding, .. } => {
            let Shape::Image { height, width, .. } = input else {
                needs_image(diagnostics);
                return None;
            };
            if out_channels == 0 || kernel == 0 || stride == 0 {
                return None;
            }
            let (h, w) = conv_window(index, kernel, stride, padding, height, width, diagnostics)?;
            Some(Shape::Image { channels: out_channels, height: h, width: w })
        }
        Op::AvgPool2d { kernel, stride } | Op::MaxPool2d { kernel, stride } => {
            let Shape::Image { channels, height, width } = input else {
                needs_image(diagnostics);
                return None;
            };
            if kernel == 0 || stride == 0 {
                return None;
            }
            if matches!(op, Op::AvgPool2d { .. }) && (height % kernel != 0 || width % kernel != 0) {
                let fits = |size: usize| size.div_ceil(kernel) * kernel;
                let sizes = if height == width { height.to_string() } else { format!("{height} and {width}") };
                diagnostics.push(
                    at(LayerField::Size),
                    format!(
                        "`avg_pool({kernel})` does not tile its {height}x{width} input exactly; pad or crop the previous layer to {}x{} or pick a kernel that divides {sizes}",
                        fits(height),
                        fits(width)
                    ),
                );
                return None;
            }
            let h = window_output(height, kernel, stride, 0).ok()?;
            let w = window_output(width, kernel, stride, 0).ok()?;
            Some(Shape::Image { channels, height: h, width: w })
        }
        Op::Linear { out_features, .. } => {
            if let Shape::Image { channels, height, width } = input {
                diagnostics.push(
                    at(LayerField::Kind),
                    format!(
                        "`linear` needs a vector input, but its input is the image {input}; insert `flatten` before it (giving [{}])",
                        channels * height * width
                    ),
                );
                return None;
            }
            (out_features > 0).then_some(Shape::Vector { features: out_features })
        }
        Op::Flatten => Some(Shape::Vector { features: input.numel() }),
        Op::Relu
        | Op::LeakyRelu { .. }
        | Op::Unscaled(_)
        | Op::Normalization(_)
        | Op::Dropout { .. }
        | Op::Scale { .. }
        | Op::Scalar
        | Op::Bias => Some(input),
        Op::Residual(_) | Op::Bottleneck { .. } => unreachable!("blocks are resolved by infer_chain"),
    }
}

fn conv_window(
    index: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    height: usize,
    width: usize,
    diagnostics: &mut Diagnostics,
) -> Option<(usize, usize)> {
    let mut report = |error: WindowError, size: usize| {
        match error {
        WindowError::KernelTooLarge { padded } => diagnostics.push(
            Location::layer(index, LayerField::Kernel),
            format!(
                "the {kernel}x{kernel} kernel is larger than its padded input ({padded} = {size} + 2 x {padding}); use a kernel of at most {padded} or `padding = {}`",
                (kernel - size).div_ceil(2)
            ),
        ),
        WindowError::NotIntegral { padded } => {
            let padding_fix = (1..=kernel).find(|extra| (padded + 2 * extra - kernel).is_multiple_of(stride));
            let hint = match padding_fix {
                Some(extra) => format!("use `padding = {}`", padding + extra),
                None => format!("pick an input size that {stride} divides"),
            };
            diagnostics.push(
                Location::layer(index, LayerField::Stride),
                format!(
                    "the output size ({padded} - {kernel}) / {stride} + 1 is not an integer, so {} would be dropped; {hint}",
                    match (padded - kernel) % stride {
                        1 => "the last row".to_string(),
                        rows => format!("the last {rows} rows"),
                    }
                ),
            )
        }
    }
    };
    let h = window_output(height, kernel, stride, padding).map_err(|e| report(e, height)).ok();
    let w = if width == height {
        h
    } else {
        window_output(width, kernel, stride, padding).map_err(|e| report(e, width)).ok()
    };
    Some((h?, w?))
}
