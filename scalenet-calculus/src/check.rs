//! The rules a declaration must follow for the calculus to hold, one function per rule.
//!
//! Each rule states what it rejects and why, citing the paper (Defazio & Bottou, 2022). Rules
//! never stop at the first error: every layer is checked so that one compile reports everything.

use crate::diagnostic::{Diagnostics, LayerField, Location, NetworkField};
use crate::spec::{LayerSpec, NetworkSpec, Op, Shape};

/// Runs every rule on `spec`. Returns the per-sample shape after each layer when shapes could be
/// inferred all the way through.
pub fn check(spec: &NetworkSpec, diagnostics: &mut Diagnostics) -> Option<Vec<Shape>> {
    check_network_options(spec, diagnostics);
    let mut first_broken_layer = None;
    for (index, layer) in spec.layers.iter().enumerate() {
        let before = diagnostics.0.len();
        reject_max_pooling(index, layer, diagnostics);
        reject_mismatched_strides(index, layer, diagnostics);
        reject_non_homogeneous_activations(index, layer, diagnostics);
        reject_normalization(index, layer, diagnostics);
        check_positive_sizes(index, layer, diagnostics);
        check_dropout_probability(index, layer, diagnostics);
        check_leaky_relu_slope(index, layer, diagnostics);
        check_scale_factor(index, layer, diagnostics);
        if diagnostics.0.len() > before {
            first_broken_layer.get_or_insert(index);
        }
    }
    infer_shapes(spec, first_broken_layer, diagnostics)
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

/// Shapes are inferred from `input` layer by layer, as PyTorch would compute them, but stricter:
/// an output size must be an exact integer (PyTorch floors and silently drops rows, which breaks
/// the assumption that every input entry feeds the next layer), and average pooling must tile its
/// input exactly (candle's pooling backward is wrong otherwise). Inference stops at the first
/// shape error, since later shapes are unknown, and before the first layer that broke another
/// rule, so that one mistake is reported once.
fn infer_shapes(
    spec: &NetworkSpec,
    first_broken_layer: Option<usize>,
    diagnostics: &mut Diagnostics,
) -> Option<Vec<Shape>> {
    let mut shape = spec.input?;
    if shape.dims().contains(&0) {
        return None;
    }
    let mut shapes = Vec::with_capacity(spec.layers.len());
    for (index, layer) in spec.layers.iter().enumerate() {
        if first_broken_layer == Some(index) {
            return None;
        }
        match output_shape(index, &layer.op, shape, diagnostics) {
            Some(next) => shape = next,
            None => return None,
        }
        shapes.push(shape);
    }
    Some(shapes)
}

/// Output size of a window of `kernel` sliding by `stride` over `size` padded by `padding`.
fn window_output(size: usize, kernel: usize, stride: usize, padding: usize) -> Result<usize, WindowError> {
    let padded = size + 2 * padding;
    if kernel > padded {
        return Err(WindowError::KernelTooLarge { padded });
    }
    if (padded - kernel) % stride != 0 {
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
            let padding_fix = (1..=kernel).find(|extra| (padded + 2 * extra - kernel) % stride == 0);
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
