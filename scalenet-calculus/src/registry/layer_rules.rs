//! The per-layer rules, one function per rule: each kind's registry entry lists those that apply
//! to it (see [`crate::rules`] for the rules of a whole declaration and of a plan).

use crate::diagnostic::{Diagnostics, Fix, LayerField, Location, Rule};
use crate::spec::{LayerSpec, Op};

/// Max pooling does not preserve the activation scaling factor (Table 1): its forward pass keeps
/// the largest entry and its backward pass routes the whole gradient to it, so neither second
/// moment follows a rule the calculus can propagate. Average pooling, or a convolution whose
/// stride equals its kernel, downsamples with a known scaling.
pub fn reject_max_pooling(layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    if let Op::MaxPool2d { kernel, .. } = layer.op {
        diagnostics.push(Rule::MaxPooling,
            Location::layer(layer.id, LayerField::Kind),
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
pub fn reject_mismatched_strides(layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    match layer.op {
        Op::Conv2d { kernel, stride, padding, .. } if stride > 1 && kernel > 0 && stride != kernel => {
            let padding = if padding > 0 { format!(", padding = {padding}") } else { String::new() };
            diagnostics.push(
                Rule::StrideEqualsKernel,
                Location::layer(layer.id, LayerField::Stride),
                format!(
                    "a strided convolution maintains scaling only when its stride equals its kernel (Table 1); to downsample by {stride}, use `conv(.., kernel = {stride}, stride = {stride})`, or `conv(.., kernel = {kernel}{padding})` followed by `avg_pool({stride})`; or drop the stride"
                ),
            )
        }
        Op::AvgPool2d { kernel, stride } if stride != kernel && stride > 0 && kernel > 0 => diagnostics.push(Rule::StrideEqualsKernel,
            Location::layer(layer.id, LayerField::Stride),
            format!(
                "average pooling maintains scaling only when its stride equals its kernel (Table 1); write `avg_pool({kernel})`, or `avg_pool({stride})` to downsample by {stride}"
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
pub fn reject_non_homogeneous_activations(layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    if let Op::Unscaled(activation) = layer.op {
        if !layer.allow_unscaled {
            diagnostics.push_with_fix(
                Rule::PositivelyHomogeneous,
                Location::layer(layer.id, LayerField::Kind),
                format!(
                    "`{}` is not positively homogeneous, so it does not preserve the scaling factor (Table 1); use `relu` or `leaky_relu(slope)`",
                    activation.name()
                ),
                Fix::AllowUnscaled,
            );
        }
    }
}

/// The calculus designs networks that are well conditioned without normalization (sections 1,
/// 11): normalization layers rescale activations by statistics of the batch, which replaces the
/// moments the calculus propagates. Use fixed scalars and residual weighting instead.
pub fn reject_normalization(layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    if let Op::Normalization(norm) = layer.op {
        diagnostics.push(Rule::NoNormalization,
            Location::layer(layer.id, LayerField::Kind),
            format!(
                "`{}` normalizes away the moments the calculus designs; remove it: the geometric init and the inserted fixed scalars condition the network without normalization (section 11)",
                norm.name()
            ),
        );
    }
}

/// Channels, features, kernels and strides count things: zero of them is an empty layer.
pub fn check_positive_sizes(layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    let mut require = |value: usize, field: LayerField, what: &str| {
        if value == 0 {
            diagnostics.push(
                Rule::PositiveSizes,
                Location::layer(layer.id, field),
                format!("{what} must be at least 1"),
            );
        }
    };
    match layer.op {
        Op::Conv2d { out_channels, kernel, stride, groups, .. } => {
            require(out_channels, LayerField::Size, "the number of output channels");
            require(kernel, LayerField::Kernel, "the kernel size");
            require(stride, LayerField::Stride, "the stride");
            require(groups, LayerField::Groups, "the number of groups");
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
pub fn check_dropout_probability(layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    if let Op::Dropout { p } = layer.op {
        let at = Location::layer(layer.id, LayerField::Probability);
        if !(0.0..1.0).contains(&p) {
            let message = format!("dropout probability must lie in [0, 1), got {p:?}; e.g. `dropout(0.5)`");
            diagnostics.push(Rule::DropoutProbability, at, message);
        } else if p as f32 >= 1.0 {
            // Dropout runs in f32, where a probability this close to 1 is 1: it would keep nothing.
            let message = format!("dropout probability {p:?} is 1 in f32, the precision dropout runs in, and would keep nothing; use at most 0.9999999");
            diagnostics.push(Rule::DropoutProbability, at, message);
        }
    }
}

/// Leaky ReLU `max(x, a x)` is positively homogeneous for any a, but the gain 2/(1 + a^2) of its
/// initialization assumes 0 <= a < 1, the leaky regime; a negative slope makes it a different,
/// non-monotone function.
pub fn check_leaky_relu_slope(layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    if let Op::LeakyRelu { slope } = layer.op {
        if !(slope.is_finite() && (0.0..1.0).contains(&slope)) {
            diagnostics.push(
                Rule::LeakyReluSlope,
                Location::layer(layer.id, LayerField::Slope),
                format!("the leaky relu slope must lie in [0, 1), got {slope:?}; e.g. `leaky_relu(0.01)`"),
            );
        }
    }
}

/// A fixed scalar multiplies both second moments by f^2 (Appendix B); zero erases the signal and a
/// non-finite factor is not a number.
pub fn check_scale_factor(layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    if let Op::Scale { factor } = layer.op {
        if !(factor.is_finite() && factor != 0.0) {
            diagnostics.push(
                Rule::ScaleFactor,
                Location::layer(layer.id, LayerField::Factor),
                format!("a scale factor must be a finite nonzero number, got {factor:?}"),
            );
        }
    }
}

/// A residual block adds its branches, weighted so that `alpha^2 + beta^2 = 1` keeps the second
/// moment (section 11, following Shao et al.): `beta` in (0, 1], `alpha` in [0, 1). Give one of
/// them; both must agree.
pub fn check_residual_weights(layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    let (alpha, beta) = match &layer.op {
        Op::Residual(block) => (block.alpha, block.beta),
        Op::Bottleneck { beta, width, .. } => {
            if *width == 0 {
                diagnostics.push(
                    Rule::ResidualWeights,
                    Location::layer(layer.id, LayerField::Width),
                    "the bottleneck width must be at least 1",
                );
            }
            (None, Some(*beta))
        }
        _ => return,
    };
    let at = |field| Location::layer(layer.id, field);
    if let Some(beta) = beta {
        if !(beta > 0.0 && beta <= 1.0) {
            diagnostics.push(
                Rule::ResidualWeights,
                at(LayerField::Beta),
                format!("`beta` must lie in (0, 1], got {beta:?}; e.g. `beta = 0.5`"),
            );
        }
    }
    if let Some(alpha) = alpha {
        if !(0.0..1.0).contains(&alpha) {
            diagnostics.push(
                Rule::ResidualWeights,
                at(LayerField::Alpha),
                format!("`alpha` must lie in [0, 1), got {alpha:?}"),
            );
        }
    }
    match (alpha, beta) {
        (None, None) => diagnostics.push(Rule::ResidualWeights,
            at(LayerField::Kind),
            "a residual block needs its branch weight; write `residual(beta = 0.5) { .. }` (alpha = sqrt(1 - beta^2) follows)",
        ),
        (Some(alpha), Some(beta)) if (alpha * alpha + beta * beta - 1.0).abs() > 1e-6 => diagnostics.push(Rule::ResidualWeights,
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
