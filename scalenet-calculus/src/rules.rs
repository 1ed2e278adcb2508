//! The rules a declaration must follow for the calculus to hold, one function per rule.
//!
//! Each rule states what it rejects and why, citing the paper (Defazio & Bottou, 2022). Rules
//! never stop at the first error: every layer is checked so that one compile reports everything.
//! The per-layer rules live with the kinds they apply to, in the registry (re-exported here), so
//! that the registry needs nothing above it; the shape rules live with each kind's shape function
//! there and in shape inference. This module holds the rules of a whole declaration and of a plan.

use crate::diagnostic::{Diagnostics, LayerField, Location, NetworkField, Rule};
use crate::plan::{Plan, StepOp};
use crate::registry::{ArgValue, Op, Role};
use crate::spec::{LayerId, LayerSpec, NetworkSpec, MAX_ELEMENTS};
use std::collections::HashSet;

pub use crate::registry::layer_rules::{
    check_dropout_probability, check_leaky_relu_slope, check_positive_sizes, check_residual_weights,
    check_scale_factor, reject_max_pooling, reject_mismatched_strides, reject_non_homogeneous_activations,
    reject_normalization,
};

/// The rules that need no shapes, for a front end that cannot give the input shape (the
/// `network!` macro when `input` is missing) but still reports every other mistake.
pub fn check_rules(spec: &NetworkSpec) -> Diagnostics {
    let mut diagnostics = Diagnostics::default();
    let mut spec = spec.clone();
    spec.assign_layer_ids();
    check_declaration(&spec, &mut diagnostics);
    diagnostics
}

/// Runs every rule that needs no shapes: the network's options, each layer's own rules (those
/// its kind lists), and the naming rules of every chain. Returns the layers that broke one, so
/// that shape inference stops before them and each mistake is reported once.
pub(crate) fn check_declaration(spec: &NetworkSpec, diagnostics: &mut Diagnostics) -> Vec<crate::spec::LayerId> {
    check_network_options(spec, diagnostics);
    let mut broken = check_mirrored_weights(spec, diagnostics);
    for layer in spec.walk() {
        let before = diagnostics.0.len();
        check_size_limits(layer, diagnostics);
        for rule in layer.op.def().rules {
            rule(layer, diagnostics);
        }
        check_allow_unscaled_target(layer, diagnostics);
        check_reserved_names(layer, diagnostics);
        if diagnostics.0.len() > before {
            broken.push(layer.id);
        }
    }
    check_unique_names(&spec.layers, diagnostics);
    for layer in spec.walk() {
        for branch in layer.branches() {
            check_unique_names(branch, diagnostics);
        }
    }
    broken
}

/// Names are parameter prefixes (`conv1.weight`) and struct fields, so two layers of one chain
/// may not share one; an unnamed layer with parameters takes `<keyword>_<id>`, which a declared
/// name may collide with too.
pub fn check_unique_names(chain: &[LayerSpec], diagnostics: &mut Diagnostics) {
    let mut seen = HashSet::new();
    for layer in chain {
        if let Some(name) = layer.field_name() {
            if !seen.insert(name.clone()) {
                diagnostics.push(
                    Rule::UniqueNames,
                    Location::layer(layer.id, LayerField::Name),
                    format!("duplicate layer name `{name}`; every layer name must be unique"),
                );
            }
        }
    }
}

/// Every size a layer is given (channels, kernel, stride, padding, width) is at most
/// [`MAX_ELEMENTS`]: a tensor cannot hold more, and below it every size arithmetic of the
/// calculus is exact.
pub fn check_size_limits(layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    let params = layer.op.def().param_list();
    for (param, value) in params.iter().zip(layer.op.args()) {
        if let Some(ArgValue::Count(value)) = value {
            if value > MAX_ELEMENTS {
                diagnostics.push(
                    Rule::SizeLimit,
                    Location::layer(layer.id, param.field),
                    format!("`{}` = {value} is beyond the limit of 2^31 that any tensor size can reach; use a smaller value", param.name),
                );
            }
        }
    }
}

/// `output_calibration` is the network's own field and parameter (section 7's output
/// calibration), so no layer may take its name.
pub fn check_reserved_names(layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    if let Some(name) = &layer.name {
        if RESERVED_NAMES.contains(&name.as_str()) {
            diagnostics.push(
                Rule::ReservedNames,
                Location::layer(layer.id, LayerField::Name),
                format!("`{name}` is the name of the network's own output calibration (section 7); name the layer differently"),
            );
        }
    }
}

/// The names generated networks use for themselves.
pub const RESERVED_NAMES: [&str; 1] = ["output_calibration"];

/// Every parameter path of the plan (`res1.main.conv`), flattened with `_` into a struct field
/// (`res1_main_conv`), names one field: a declared name may not equal a branch layer's
/// flattened one (`a_main_c` beside `a: residual { c: .. }`), nor a bottleneck's.
pub fn check_unique_fields(plan: &Plan, diagnostics: &mut Diagnostics) {
    let mut seen = HashSet::new();
    for step in plan.walk() {
        if step.step.params.is_none() {
            continue;
        }
        let field = step.path.replace('.', "_");
        if !seen.insert(field.clone()) {
            let id = step.step.layer_id().unwrap_or_default();
            diagnostics.push(
                Rule::UniqueNames,
                Location::layer(id, LayerField::Name),
                format!("the field `{field}` would be generated twice (branch layers are flattened as `<block>_main_<layer>`); rename one of the layers"),
            );
        }
    }
}

/// The values a generated network computes must be representable in f32 (the precision it
/// computes in): the standard deviation of every activation, of every backward signal (for a unit
/// gradient at the output), of every initial weight and weight gradient, and every fixed scalar,
/// each within f32's normal range (1.2e-38 to 3.4e38). The calculus's ratios (the scaling factor
/// of eq. (1), γ of Theorem 1) are never computed by the network and need only be finite and
/// positive. A declaration fails this when one factor it wrote is extreme (`scale(1e40)`,
/// `residual(beta = 1e-200)`), which is blamed where it is written, or when many moderate ones
/// compound, which is reported where the values leave the range.
pub fn check_finite_plan(plan: &Plan, diagnostics: &mut Diagnostics) {
    let mut walk = RangeWalk { factors: Vec::new(), last_layer: LayerId::default() };
    let Some((quantity, value)) = walk.first_out_of_range(&plan.steps) else { return };
    let extreme = walk
        .factors
        .iter()
        .filter(|f| f.value.abs().log10().abs() >= EXTREME_DECADES)
        .max_by(|a, b| a.value.abs().log10().abs().total_cmp(&b.value.abs().log10().abs()));
    let (location, message) = match extreme {
        Some(factor) => (
            factor.location,
            format!(
                "{} takes the network's values out of f32's range ({quantity} reaches {value:.3e}; f32 holds \
                 1.2e-38 to 3.4e38); bring it closer to 1",
                factor.written
            ),
        ),
        None => (
            Location::layer(walk.last_layer, LayerField::Kind),
            format!(
                "the network's values leave f32's range here ({quantity} reaches {value:.3e}; f32 holds 1.2e-38 \
                 to 3.4e38) though no single factor is extreme: the factors of the layers before it compound; use \
                 fewer of them or factors closer to 1"
            ),
        ),
    };
    diagnostics.push(Rule::FinitePlan, location, message);
}

/// A factor this many powers of ten from 1 is blamed by name when values leave f32's range.
const EXTREME_DECADES: f64 = 10.0;

/// A multiplier the declaration wrote, in force at the current step of a [`RangeWalk`].
struct WrittenFactor {
    value: f64,
    location: Location,
    written: String,
}

/// The steps in network order with the factors the declaration wrote that apply to each: the
/// chain's `scale(f)`s so far, and the `beta` (main branch) or `alpha` (shortcut) of every
/// enclosing block.
struct RangeWalk {
    factors: Vec<WrittenFactor>,
    last_layer: LayerId,
}

impl RangeWalk {
    /// The first value out of range, as (what it is, its value), leaving `factors` as they
    /// stood there.
    fn first_out_of_range(&mut self, steps: &[crate::plan::Step]) -> Option<(&'static str, f64)> {
        for step in steps {
            if let Some(id) = step.layer_id() {
                self.last_layer = id;
            }
            match &step.op {
                StepOp::Declared { id, op: Op::Scale { factor } } => self.factors.push(WrittenFactor {
                    value: *factor,
                    location: Location::layer(*id, LayerField::Factor),
                    written: format!("`scale({factor:e})`"),
                }),
                StepOp::Block { id, alpha, beta, main, shortcut, .. } => {
                    for (weight, field, name, branch) in
                        [(*beta, LayerField::Beta, "beta", main), (*alpha, LayerField::Alpha, "alpha", shortcut)]
                    {
                        let outside = self.factors.len();
                        self.factors.push(WrittenFactor {
                            value: weight,
                            location: Location::layer(*id, field),
                            written: format!("`{name} = {weight:e}`"),
                        });
                        if let Some(found) = self.first_out_of_range(branch) {
                            return Some(found);
                        }
                        // A branch's own `scale`s and blocks end with it.
                        self.factors.truncate(outside);
                    }
                    self.last_layer = *id;
                }
                StepOp::Declared { .. } | StepOp::FixedScale { .. } => {}
            }
            if let Some(found) = out_of_range(step) {
                return Some(found);
            }
        }
        None
    }
}

/// The first of `step`'s values outside f32's normal range, or ratio that is not finite and
/// positive.
fn out_of_range(step: &crate::plan::Step) -> Option<(&'static str, f64)> {
    let f32_normal = |v: f64| v.is_finite() && v.abs() >= f32::MIN_POSITIVE as f64 && v.abs() <= f32::MAX as f64;
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let mut values =
        vec![("the activations' std", step.forward.second.sqrt()), ("the backward signal's std", step.backward.sqrt())];
    if let StepOp::FixedScale { factor, .. } = step.op {
        values.push(("a fixed scalar", factor));
    }
    if let Some(weight) = step.weight() {
        values.push(("the initial weight std", weight.std()));
        if let Some(gamma) = step.gamma {
            values.push(("the weight gradient's std", (gamma * weight.second_moment).sqrt()));
        }
    }
    let ratios = [("the scaling factor", Some(step.scaling)), ("γ", step.gamma)];
    values
        .into_iter()
        .find(|&(_, v)| !f32_normal(v))
        .or_else(|| ratios.into_iter().filter_map(|(what, v)| v.map(|v| (what, v))).find(|&(_, v)| !positive(v)))
}

/// `#[allow(unscaled)]` accepts an activation that breaks the calculus; on any other layer it
/// would silence nothing, so it is a mistake worth pointing out.
pub fn check_allow_unscaled_target(layer: &LayerSpec, diagnostics: &mut Diagnostics) {
    if layer.allow_unscaled && layer.op.def().role != Role::Unscaled {
        diagnostics.push(
            Rule::AllowUnscaledTarget,
            Location::layer(layer.id, LayerField::Kind),
            format!(
                "`#[allow(unscaled)]` only applies to an activation that breaks the calculus, not to `{}`; remove it",
                layer.op.keyword()
            ),
        );
    }
}

/// Every moment and every fan-in follows from the input shape, so it needs at least one element
/// in every dimension. The target
/// output std must be a positive number (section 7) and the typical kernel `k*` of `c = 2/k*`
/// (section 6.2) a positive size. Mirrored weights are built as `[W0; -W0]` pairs so that the
/// network is linear at initialization; centring their rows would break the pairs, so
/// `centred_weights` does not combine with `init: mirrored`.
pub fn check_network_options(spec: &NetworkSpec, diagnostics: &mut Diagnostics) {
    if spec.input.dims().contains(&0) {
        diagnostics.push(
            Rule::NetworkOptions,
            Location::Network(NetworkField::Input),
            "input dimensions must be positive; every dimension of `input` needs at least one element",
        );
    } else if spec.input.checked_numel().is_none_or(|n| n > MAX_ELEMENTS) {
        diagnostics.push(
            Rule::SizeLimit,
            Location::Network(NetworkField::Input),
            "the input has more than 2^31 elements per sample, beyond what a tensor can hold; declare a smaller `input`",
        );
    }
    if !(spec.output_std.is_finite() && spec.output_std > 0.0) {
        diagnostics.push(
            Rule::NetworkOptions,
            Location::Network(NetworkField::OutputStd),
            "`output_std` must be a positive number, such as 1 (the default: logits at unit scale); section 7 calls output variances of 0.01 to 0.1 reasonable",
        );
    }
    if spec.typical_kernel == Some(0) {
        diagnostics.push(
            Rule::NetworkOptions,
            Location::Network(NetworkField::TypicalKernel),
            "`typical_kernel` must be at least 1; it is the k* of c = 2/k* (section 6.2)",
        );
    }
    if spec.centred_weights && spec.weights.is_mirrored() {
        diagnostics.push(
            Rule::NetworkOptions,
            Location::Network(NetworkField::CentredWeights),
            "`centred_weights` would break the pairs of mirrored weights; use `init: geometric` with it, or remove `centred_weights`",
        );
    }
}

/// Mirrored weights (`init: mirrored`, Burkholz & Dubatovka 2019) make a ReLU network compute a
/// linear map at initialization: a layer mirrored along its outputs produces pairs `(g, -g)`, a
/// ReLU turns them into `(relu(g), relu(-g))`, and the next layer, mirrored along its inputs,
/// reads their difference `relu(g) - relu(-g) = g`. So every weight layer but the last needs an
/// even number of outputs (the two halves of `[W0; -W0]`), and exactly one `relu` must separate
/// consecutive weight layers: none leaves `(g, -g)` to be summed into `2 W0 g`, and a leaky ReLU
/// of slope `a` passes `(1 + a) g`, whose second moment is not the `(1 + a^2)/2` gain the
/// calculus propagates (section 6). Residual blocks are rejected: a shortcut adds a stream that is
/// not mirrored to one that is (or a ReLU-ed one to a mirrored one, in post-activation blocks), so
/// the pairing does not survive the sum in general. Returns the layers at fault.
pub fn check_mirrored_weights(spec: &NetworkSpec, diagnostics: &mut Diagnostics) -> Vec<LayerId> {
    let mut broken = Vec::new();
    if !spec.weights.is_mirrored() {
        return broken;
    }
    let mut fail = |id: LayerId, field: LayerField, message: String| {
        diagnostics.push(Rule::MirroredWeights, Location::layer(id, field), message);
        broken.push(id);
    };
    let weight_layers: Vec<&LayerSpec> =
        spec.layers.iter().filter(|layer| layer.op.weight_kernel().is_some()).collect();
    let last_weight = weight_layers.last().map(|layer| layer.id);
    let mut activations_since_weight: Option<Vec<&LayerSpec>> = None;
    for layer in &spec.layers {
        if layer.op.is_block() {
            fail(
                layer.id,
                LayerField::Kind,
                "`init: mirrored` does not support residual blocks: the shortcut's sum breaks the mirrored pairs; use `init: geometric` for residual networks, or remove the block".to_string(),
            );
            continue;
        }
        let is_activation = matches!(layer.op.def().role, Role::Activation | Role::Unscaled);
        if is_activation {
            if let Some(seen) = &mut activations_since_weight {
                seen.push(layer);
            }
            continue;
        }
        let Some(_) = layer.op.weight_kernel() else { continue };
        if let Op::Conv2d { groups: groups @ 2.., .. } = layer.op {
            fail(
                layer.id,
                LayerField::Groups,
                format!("`init: mirrored` does not support grouped convolutions: its orthogonal half is drawn over every input channel, and {groups} groups would zero all but a block of it; use `init: geometric`, or drop `groups`"),
            );
            continue;
        }
        if let Some(seen) = activations_since_weight.take() {
            match seen.as_slice() {
                [] => fail(
                    layer.id,
                    LayerField::Kind,
                    "`init: mirrored` needs a `relu` before this layer: without one it reads the previous layer's mirrored pairs (g, -g) as g - (-g) = 2g instead of g; add `relu`".to_string(),
                ),
                [only] if only.op == Op::Relu => {}
                [only] => fail(
                    only.id,
                    LayerField::Kind,
                    format!(
                        "`init: mirrored` pairs each unit with its negative and reads relu(g) - relu(-g) = g, which only `relu` gives; `{}` does not, replace it with `relu`",
                        only.op.keyword()
                    ),
                ),
                [_, second, ..] => fail(
                    second.id,
                    LayerField::Kind,
                    "`init: mirrored` needs exactly one `relu` between weight layers; remove this one".to_string(),
                ),
            }
        }
        if Some(layer.id) != last_weight {
            let outputs = match layer.op {
                Op::Conv2d { out_channels, .. } => out_channels,
                Op::Linear { out_features, .. } => out_features,
                _ => 0,
            };
            if outputs % 2 == 1 {
                let what = if matches!(layer.op, Op::Conv2d { .. }) { "channels" } else { "features" };
                fail(
                    layer.id,
                    LayerField::Size,
                    format!(
                        "`init: mirrored` splits the outputs into mirrored halves [W0; -W0], so they must be even; use {} or {} output {what}",
                        outputs - 1,
                        outputs + 1
                    ),
                );
            }
        }
        activations_since_weight = Some(Vec::new());
    }
    broken
}
