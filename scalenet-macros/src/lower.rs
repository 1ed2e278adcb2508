//! [`ast::Network`] -> [`NetworkSpec`] of the calculus, plus the table that maps every calculus
//! [`Location`] back to the token a user wrote.

use crate::ast::{Arg, Layer, Network, Value, ValueKind};
use crate::errors::{suggestion, Errors};
use crate::parse::unknown_layer_message;
use proc_macro2::Span;
use scalenet_calculus::{
    InitScheme, LayerField, LayerSpec, Location, NetworkField, NetworkSpec, Normalization, Op, Residual, Shape,
    UnscaledActivation, DEFAULT_OUTPUT_STD,
};
use std::collections::HashMap;

pub const LAYER_KEYWORDS: &[&str] = &[
    "conv",
    "linear",
    "avg_pool",
    "relu",
    "leaky_relu",
    "dropout",
    "flatten",
    "scale",
    "scalar",
    "bias",
    "max_pool",
    "sigmoid",
    "tanh",
    "gelu",
    "silu",
    "swish",
    "elu",
    "softplus",
    "softmax",
    "batch_norm",
    "layer_norm",
    "group_norm",
];

/// Where each part of the declaration was written.
pub struct Spans {
    declaration: Span,
    network: HashMap<NetworkField, Span>,
    layers: Vec<LayerSpans>,
}

struct LayerSpans {
    kind: Span,
    fields: HashMap<LayerField, Span>,
}

impl Spans {
    /// The token a diagnostic should underline: the field if it was written, else the layer's keyword.
    pub fn at(&self, location: Location) -> Span {
        match location {
            Location::Network(field) => self.network.get(&field).copied().unwrap_or(self.declaration),
            Location::Layer { index, field } => {
                let layer = &self.layers[index];
                layer.fields.get(&field).copied().unwrap_or(layer.kind)
            }
        }
    }
}

pub fn lower(network: &Network, errors: &mut Errors) -> (NetworkSpec, Spans) {
    let options = &network.options;
    let mut spans = Spans { declaration: network.ident.span(), network: HashMap::new(), layers: Vec::new() };
    let input = options.input.as_ref().map(|input| {
        spans.network.insert(NetworkField::Input, input.span);
        match input.value[..] {
            [features] => Shape::Vector { features },
            [channels, height, width] => Shape::Image { channels, height, width },
            _ => unreachable!("checked by the parser"),
        }
    });
    let init = match &options.init {
        None => InitScheme::Geometric,
        Some(init) => {
            spans.network.insert(NetworkField::Init, init.span);
            InitScheme::from_name(&init.value).unwrap_or_else(|| {
                let names = InitScheme::ALL.map(|s| s.name());
                errors.error(
                    init.span,
                    format!(
                        "unknown init `{}`{}",
                        init.value,
                        match suggestion(&init.value, names).as_str() {
                            "" => "; expected geometric, fan_in, fan_out or arithmetic".to_string(),
                            hint => hint.to_string(),
                        }
                    ),
                );
                InitScheme::Geometric
            })
        }
    };
    if let Some(k) = &options.typical_kernel {
        spans.network.insert(NetworkField::TypicalKernel, k.span);
    }
    if let Some(std) = &options.output_std {
        spans.network.insert(NetworkField::OutputStd, std.span);
    }

    let mut next_index = 0;
    let layers = lower_chain(&network.layers, &mut spans, &mut next_index, errors);
    let spec = NetworkSpec {
        input,
        init,
        typical_kernel: options.typical_kernel.as_ref().map(|k| k.value),
        output_std: options.output_std.as_ref().map_or(DEFAULT_OUTPUT_STD, |s| s.value),
        fixed_scalars: options.fixed_scalars.as_ref().is_none_or(|f| f.value),
        branch_scaling: options.branch_scaling.as_ref().is_none_or(|f| f.value),
        layers,
    };
    (spec, spans)
}

/// Lowers a chain of layers, numbering them (and their branches) in pre-order as the calculus does.
fn lower_chain(layers: &[Layer], spans: &mut Spans, next_index: &mut usize, errors: &mut Errors) -> Vec<LayerSpec> {
    let mut lowered = Vec::with_capacity(layers.len());
    let mut names: HashMap<String, Span> = HashMap::new();
    for layer in layers {
        let index = *next_index;
        *next_index += 1;
        let mut fields = HashMap::new();
        let slot = spans.layers.len();
        spans.layers.push(LayerSpans { kind: layer.kind.span(), fields: HashMap::new() });
        let op = lower_op(layer, &mut fields, errors).unwrap_or(Op::Flatten);
        let op = match (op, &layer.body) {
            (Op::Residual(mut block), Some(body)) => {
                fields.insert(LayerField::MainEnd, body.main.last().map_or(layer.kind.span(), |l| l.kind.span()));
                block.main = lower_chain(&body.main, spans, next_index, errors);
                if let Some((keyword, shortcut)) = &body.shortcut {
                    fields.insert(LayerField::ShortcutEnd, keyword.span());
                    block.shortcut = Some(lower_chain(shortcut, spans, next_index, errors));
                }
                Op::Residual(block)
            }
            (Op::Residual(block), None) => {
                errors.error(layer.kind.span(), "`residual` needs its main branch in braces, e.g. `residual(beta = 0.5) { relu, conv(16, kernel = 3, padding = 1) }`");
                Op::Residual(block)
            }
            (op, Some(_)) => {
                errors.error(layer.kind.span(), format!("only `residual` takes a braced body, not `{}`", layer.kind));
                op
            }
            (op, None) => op,
        };
        spans.layers[slot].fields = fields;
        let name = layer.name.as_ref().map(|n| n.to_string());
        let field_name = name
            .clone()
            .or_else(|| (op.has_parameters() || op.is_block()).then(|| format!("{}_{index}", op.keyword())));
        if let Some(field_name) = field_name {
            let span = layer.name.as_ref().map_or(layer.kind.span(), |n| n.span());
            if names.insert(field_name.clone(), span).is_some() {
                errors.error(span, format!("duplicate layer name `{field_name}`; every layer name must be unique"));
            }
        }
        if layer.allow_unscaled && !matches!(op, Op::Unscaled(_)) {
            errors.error(
                layer.kind.span(),
                format!("`#[allow(unscaled)]` only applies to an activation that breaks the calculus, not to `{}`; remove it", layer.kind),
            );
        }
        lowered.push(LayerSpec { name, op, allow_unscaled: layer.allow_unscaled });
    }
    lowered
}

/// Reads a layer's arguments against what its keyword accepts.
struct Args<'a> {
    layer: &'a Layer,
    positional: Vec<&'a Value>,
    named: HashMap<String, &'a Value>,
    fields: &'a mut HashMap<LayerField, Span>,
    errors: &'a mut Errors,
    /// A misspelled key or an extra positional argument was reported; a "missing" error for what
    /// it meant would repeat it.
    misplaced: bool,
}

impl<'a> Args<'a> {
    /// Validates keys and counts: unknown and duplicate keys, too many positional arguments.
    fn new(
        layer: &'a Layer,
        positional_names: &[&str],
        keys: &[&str],
        fields: &'a mut HashMap<LayerField, Span>,
        errors: &'a mut Errors,
    ) -> Self {
        let kind = layer.kind.to_string();
        let mut positional = Vec::new();
        let mut named = HashMap::new();
        let mut misplaced = false;
        for Arg { key, value } in layer.args.iter().flatten() {
            match key {
                None if positional.len() < positional_names.len() => positional.push(value),
                None => {
                    misplaced = true;
                    errors.error(
                        value.span,
                        match positional_names {
                            [] => format!("`{kind}` takes no positional argument; remove it"),
                            [one] => format!(
                                "`{kind}` takes one positional argument ({one}); name the others, e.g. `{}`",
                                example(&kind)
                            ),
                            _ => format!("too many positional arguments for `{kind}`"),
                        },
                    );
                }
                Some(key) => {
                    let name = key.to_string();
                    if !keys.contains(&name.as_str()) {
                        let hint = match suggestion(&name, keys.iter().copied()).as_str() {
                            "" if keys.is_empty() => format!("; `{kind}` takes no named options"),
                            "" => format!(
                                "; `{kind}` accepts {}",
                                keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                            ),
                            hint => hint.to_string(),
                        };
                        errors.error(key.span(), format!("unknown option `{name}` for `{kind}`{hint}"));
                        misplaced = true;
                    } else if named.insert(name.clone(), value).is_some() {
                        errors.error(key.span(), format!("duplicate option `{name}`; give it once"));
                    }
                }
            }
        }
        Args { layer, positional, named, fields, errors, misplaced }
    }

    fn value(&mut self, slot: Slot, field: LayerField) -> Option<&'a Value> {
        let value = match slot {
            Slot::Positional(i) => self.positional.get(i).copied(),
            Slot::Named(key) => self.named.get(key).copied(),
        }?;
        self.fields.insert(field, value.span);
        Some(value)
    }

    fn usize(&mut self, slot: Slot, field: LayerField) -> Option<usize> {
        let value = self.value(slot, field)?;
        match value.kind {
            ValueKind::Int(v) => Some(v as usize),
            _ => {
                self.errors.error(value.span, format!("expected a nonnegative integer for {}", slot.describe()));
                Some(1)
            }
        }
    }

    fn f64(&mut self, slot: Slot, field: LayerField) -> Option<f64> {
        let value = self.value(slot, field)?;
        value.as_f64().or_else(|| {
            self.errors.error(value.span, format!("expected a number for {}", slot.describe()));
            Some(1.0)
        })
    }

    fn bool(&mut self, key: &'static str, default: bool) -> bool {
        match self.named.get(key) {
            None => default,
            Some(value) => match value.kind {
                ValueKind::Bool(b) => b,
                _ => {
                    self.errors.error(value.span, format!("`{key}` is `true` or `false`"));
                    default
                }
            },
        }
    }

    fn required<T>(&mut self, value: Option<T>, what: &str) -> T
    where
        T: Default,
    {
        value.unwrap_or_else(|| {
            let kind = self.layer.kind.to_string();
            if !self.misplaced {
                self.errors.error(self.layer.kind.span(), format!("`{kind}` needs {what}, e.g. `{}`", example(&kind)));
            }
            T::default()
        })
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Positional(usize),
    Named(&'static str),
}

impl Slot {
    fn describe(&self) -> String {
        match self {
            Slot::Positional(_) => "this argument".to_string(),
            Slot::Named(key) => format!("`{key}`"),
        }
    }
}

fn example(kind: &str) -> &'static str {
    match kind {
        "conv" => "conv(16, kernel = 3, padding = 1)",
        "linear" => "linear(10)",
        "avg_pool" => "avg_pool(2)",
        "max_pool" => "avg_pool(2)",
        "scale" => "scale(0.5)",
        "residual" => "residual(beta = 0.5) { relu, conv(16, kernel = 3, padding = 1) }",
        "bottleneck" => "bottleneck(out = 256, width = 64, stride = 1, beta = 0.5)",
        "leaky_relu" => "leaky_relu(0.01)",
        "dropout" => "dropout(0.5)",
        _ => "relu",
    }
}

fn lower_op(layer: &Layer, fields: &mut HashMap<LayerField, Span>, errors: &mut Errors) -> Option<Op> {
    let kind = layer.kind.to_string();
    let unscaled = |activation| Some(Op::Unscaled(activation));
    let no_args = |errors: &mut Errors| {
        if let Some(args) = &layer.args {
            let span = args.first().map_or(layer.kind.span(), |a| a.value.span);
            errors.error(span, format!("`{kind}` takes no arguments; write `{kind}`"));
        }
    };
    match kind.as_str() {
        "conv" => {
            let mut args =
                Args::new(layer, &["output channels"], &["kernel", "stride", "padding", "bias"], fields, errors);
            let out = args.usize(Slot::Positional(0), LayerField::Size);
            let out_channels = args.required(out, "its number of output channels first");
            let kernel = args.usize(Slot::Named("kernel"), LayerField::Kernel);
            let kernel = args.required(kernel, "a kernel size");
            let stride = args.usize(Slot::Named("stride"), LayerField::Stride).unwrap_or(1);
            let padding = args.usize(Slot::Named("padding"), LayerField::Padding).unwrap_or(0);
            let bias = args.bool("bias", true);
            Some(Op::Conv2d { out_channels, kernel, stride, padding, bias })
        }
        "linear" => {
            let mut args = Args::new(layer, &["output features"], &["bias"], fields, errors);
            let out = args.usize(Slot::Positional(0), LayerField::Size);
            let out_features = args.required(out, "its number of output features");
            let bias = args.bool("bias", true);
            Some(Op::Linear { out_features, bias })
        }
        "avg_pool" | "max_pool" => {
            let mut args = Args::new(layer, &["kernel size"], &["stride"], fields, errors);
            let kernel = args.usize(Slot::Positional(0), LayerField::Size);
            let kernel = args.required(kernel, "a kernel size");
            let stride = args.usize(Slot::Named("stride"), LayerField::Stride).unwrap_or(kernel);
            Some(if kind == "avg_pool" { Op::AvgPool2d { kernel, stride } } else { Op::MaxPool2d { kernel, stride } })
        }
        "leaky_relu" => {
            let mut args = Args::new(layer, &["negative slope"], &[], fields, errors);
            let slope = args.f64(Slot::Positional(0), LayerField::Slope).unwrap_or(0.01);
            Some(Op::LeakyRelu { slope })
        }
        "dropout" => {
            let mut args = Args::new(layer, &["drop probability"], &[], fields, errors);
            let p = args.f64(Slot::Positional(0), LayerField::Probability).unwrap_or(0.5);
            Some(Op::Dropout { p })
        }
        "residual" => {
            let mut args = Args::new(layer, &[], &["beta", "alpha"], fields, errors);
            let beta = args.f64(Slot::Named("beta"), LayerField::Beta);
            let alpha = args.f64(Slot::Named("alpha"), LayerField::Alpha);
            Some(Op::Residual(Residual { alpha, beta, main: Vec::new(), shortcut: None }))
        }
        "bottleneck" => {
            let mut args = Args::new(layer, &[], &["out", "width", "stride", "beta"], fields, errors);
            let out = args.usize(Slot::Named("out"), LayerField::Size);
            let out_channels = args.required(out, "its output channels `out`");
            let width = args.usize(Slot::Named("width"), LayerField::Width);
            let width = args.required(width, "its inner `width`");
            let stride = args.usize(Slot::Named("stride"), LayerField::Stride).unwrap_or(1);
            let beta = args.f64(Slot::Named("beta"), LayerField::Beta);
            let beta = args.required(beta, "its branch weight `beta`");
            Some(Op::Bottleneck { out_channels, width, stride, beta })
        }
        "scale" => {
            let mut args = Args::new(layer, &["factor"], &[], fields, errors);
            let factor = args.f64(Slot::Positional(0), LayerField::Factor);
            Some(Op::Scale { factor: args.required(factor, "a factor") })
        }
        // Rejected by the calculus with a message about the rule; their arguments do not matter.
        "batch_norm" => Some(Op::Normalization(Normalization::BatchNorm)),
        "layer_norm" => Some(Op::Normalization(Normalization::LayerNorm)),
        "group_norm" => Some(Op::Normalization(Normalization::GroupNorm)),
        simple => {
            let op = match simple {
                "relu" => Some(Op::Relu),
                "flatten" => Some(Op::Flatten),
                "scalar" => Some(Op::Scalar),
                "bias" => Some(Op::Bias),
                "sigmoid" => unscaled(UnscaledActivation::Sigmoid),
                "tanh" => unscaled(UnscaledActivation::Tanh),
                "gelu" => unscaled(UnscaledActivation::Gelu),
                "silu" | "swish" => unscaled(UnscaledActivation::Silu),
                "elu" => unscaled(UnscaledActivation::Elu),
                "softplus" => unscaled(UnscaledActivation::Softplus),
                "softmax" => unscaled(UnscaledActivation::Softmax),
                _ => {
                    errors.error(layer.kind.span(), unknown_layer_message(simple));
                    return None;
                }
            };
            no_args(errors);
            op
        }
    }
}
