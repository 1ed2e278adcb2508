//! [`ast::Network`] -> [`NetworkSpec`] of the calculus, plus the table that maps every calculus
//! [`Location`] back to the token a user wrote. Every layer's arguments are validated against
//! its kind's [`OpDef`] in the calculus's registry: nothing here is specific to a layer kind.

use crate::ast::{Arg, Layer, Network, Value, ValueKind};
use crate::errors::{did_you_mean, suggestion, Errors};
use proc_macro2::Span;
use scalenet_calculus::registry::{self, ArgValue, Args, OpDef, Param, ParamKind, Params};
use scalenet_calculus::{
    Format, InitScheme, LayerField, LayerId, LayerSpec, Location, NetworkField, NetworkSpec, Op, Shape, WeightLaw,
    DEFAULT_OUTPUT_STD,
};
use std::collections::HashMap;

/// Where each part of the declaration was written.
pub struct Spans {
    declaration: Span,
    network: HashMap<NetworkField, Span>,
    layers: HashMap<LayerId, LayerSpans>,
    /// Every layer was lowered with the values written (an extra positional argument read as the
    /// next named one counts): no placeholder stands in anywhere, so the shapes after a layer that
    /// had an error are the ones the user meant, and the calculus may still check them.
    exact: bool,
}

struct LayerSpans {
    /// Lowering reported an error on this layer itself (an unknown kind, a bad argument): the
    /// calculus sees a placeholder, so its findings there are not reported.
    opaque: bool,
    kind: Span,
    fields: HashMap<LayerField, Span>,
    /// The layer's doc comments, which become its field's (a block has no field of its own, and
    /// the layers a bottleneck spells out do not inherit them).
    docs: Vec<syn::Attribute>,
    block: bool,
}

impl Spans {
    /// Whether a diagnostic of the calculus is about a layer lowering could not read (and so
    /// gave a placeholder): then it is not the user's mistake and is not reported.
    pub fn is_opaque(&self, location: Location) -> bool {
        matches!(location, Location::Layer { id, .. } if self.layers.get(&id).is_some_and(|layer| layer.opaque))
    }

    /// The doc comments written on layer `id`.
    pub fn docs(&self, id: LayerId) -> &[syn::Attribute] {
        match self.layers.get(&id) {
            Some(layer) if !layer.block => &layer.docs,
            _ => &[],
        }
    }

    /// Whether every layer was lowered with the values written (see the field).
    pub fn exact(&self) -> bool {
        self.exact
    }

    /// The declaration's name: where errors about the whole declaration point.
    pub fn declaration(&self) -> Span {
        self.declaration
    }

    /// The token a diagnostic should underline: the field if it was written, else the layer's keyword.
    pub fn at(&self, location: Location) -> Span {
        match location {
            Location::Network(field) => self.network.get(&field).copied().unwrap_or(self.declaration),
            Location::Layer { id, field } => match self.layers.get(&id) {
                Some(layer) => layer.fields.get(&field).copied().unwrap_or(layer.kind),
                None => self.declaration,
            },
        }
    }
}

/// Lowers the declaration. `input` may be missing: the spec then carries a placeholder and the
/// caller reports the missing input beside the rules that need no shapes.
pub fn lower(network: &Network, errors: &mut Errors) -> (NetworkSpec, Spans) {
    let options = &network.options;
    let mut spans =
        Spans { declaration: network.ident.span(), network: HashMap::new(), layers: HashMap::new(), exact: true };
    let input = options.input.as_ref().map_or(Shape::Vector { features: 1 }, |input| {
        spans.network.insert(NetworkField::Input, input.span);
        match input.value[..] {
            [features] => Shape::Vector { features },
            [channels, height, width] => Shape::Image { channels, height, width },
            _ => unreachable!("checked by the parser"),
        }
    });
    let (init, weights) = match &options.init {
        None => (InitScheme::Geometric, WeightLaw::Gaussian),
        Some(init) => {
            spans.network.insert(NetworkField::Init, init.span);
            NetworkSpec::parse_init(&init.value).unwrap_or_else(|| {
                const NAMES: [&str; 6] =
                    ["geometric", "fan_in", "fan_out", "arithmetic", "mirrored", "mirrored(orthogonal)"];
                errors.error(
                    init.span,
                    format!(
                        "unknown init `{}`{}",
                        init.value,
                        match match init.value.strip_prefix("mirrored(").and_then(|v| v.strip_suffix(')')) {
                            Some(variance) => {
                                did_you_mean(variance, ["geometric", "fan_in", "fan_out", "arithmetic", "orthogonal"])
                                    .map(|rule| format!("; did you mean `mirrored({rule})`?"))
                                    .unwrap_or_default()
                            }
                            None => suggestion(&init.value, NAMES),
                        }
                        .as_str()
                        {
                            "" => "; expected geometric, fan_in, fan_out, arithmetic, mirrored, mirrored(<one of the first four>) or mirrored(orthogonal)".to_string(),
                            hint => hint.to_string(),
                        }
                    ),
                );
                (InitScheme::Geometric, WeightLaw::Gaussian)
            })
        }
    };
    if let Some(k) = &options.typical_kernel {
        spans.network.insert(NetworkField::TypicalKernel, k.span);
    }
    if let Some(std) = &options.output_std {
        spans.network.insert(NetworkField::OutputStd, std.span);
    }
    if let Some(centred) = &options.centred_weights {
        spans.network.insert(NetworkField::CentredWeights, centred.span);
    }

    let precision = options.precision.as_ref().and_then(|precision| {
        let format = Format::from_name(&precision.value);
        if format.is_none() {
            let names = Format::ALL.map(Format::name);
            let hint = suggestion(&precision.value, names);
            let hint = if hint.is_empty() { "; expected f32, bf16 or f16".to_string() } else { hint };
            errors.error(precision.span, format!("unknown precision `{}`{hint}", precision.value));
        }
        format
    });

    let mut layer_spans = Vec::new();
    let layers = lower_chain(&network.layers, &mut layer_spans, errors, &mut spans.exact);
    let mut spec = NetworkSpec {
        input,
        init,
        weights,
        typical_kernel: options.typical_kernel.as_ref().map(|k| k.value),
        output_std: options.output_std.as_ref().map_or(DEFAULT_OUTPUT_STD, |s| s.value),
        fixed_scalars: options.fixed_scalars.as_ref().is_none_or(|f| f.value),
        branch_scaling: options.branch_scaling.as_ref().is_none_or(|f| f.value),
        spatial_coherence: options.spatial_coherence.as_ref().is_none_or(|f| f.value),
        centred_weights: options.centred_weights.as_ref().is_some_and(|f| f.value),
        varying_output_std: options.varying_output_std.as_ref().is_some_and(|f| f.value),
        precision,
        layers,
    };
    // Lowering visits layers in pre-order, the order the calculus numbers them in.
    spec.assign_layer_ids();
    let ids: Vec<LayerId> = spec.walk().map(|layer| layer.id).collect();
    debug_assert_eq!(ids.len(), layer_spans.len());
    spans.layers = ids.into_iter().zip(layer_spans).collect();
    (spec, spans)
}

/// Lowers a chain of layers (and their branches), recording each layer's spans in pre-order.
fn lower_chain(layers: &[Layer], spans: &mut Vec<LayerSpans>, errors: &mut Errors, exact: &mut bool) -> Vec<LayerSpec> {
    let mut lowered = Vec::with_capacity(layers.len());
    for layer in layers {
        let mut fields = HashMap::new();
        if let Some(name) = &layer.name {
            fields.insert(LayerField::Name, name.span());
        }
        let slot = spans.len();
        let def = registry::lookup(&layer.kind.to_string());
        spans.push(LayerSpans {
            opaque: false,
            kind: layer.kind.span(),
            fields: HashMap::new(),
            docs: layer.docs.clone(),
            block: def.is_some_and(|def| def.role == registry::Role::Block),
        });
        let before = errors.len();
        let op = match def {
            Some(def) => lower_op(def, layer, &mut fields, errors, exact),
            None => {
                errors.error(layer.kind.span(), unknown_layer_message(&layer.kind.to_string()));
                *exact = false;
                Op::Flatten
            }
        };
        let op = match (op, &layer.body) {
            (Op::Residual(mut block), Some(body)) => {
                spans[slot].opaque = errors.len() > before;
                fields.insert(LayerField::MainEnd, body.main.last().map_or(layer.kind.span(), |l| l.kind.span()));
                block.main = lower_chain(&body.main, spans, errors, exact);
                if let Some((keyword, shortcut)) = &body.shortcut {
                    fields.insert(LayerField::ShortcutEnd, keyword.span());
                    block.shortcut = Some(lower_chain(shortcut, spans, errors, exact));
                }
                Op::Residual(block)
            }
            (op, None) if def.is_some_and(|def| def.branches) => {
                *exact = false;
                errors.error(
                    layer.kind.span(),
                    format!("`{}` needs its main branch in braces, e.g. `{}`", layer.kind, op.def().example),
                );
                op
            }
            (op, Some(_)) => {
                let takes =
                    registry::REGISTRY.iter().filter(|def| def.branches).map(|def| format!("`{}`", def.keyword));
                let takes: Vec<String> = takes.collect();
                errors.error(
                    layer.kind.span(),
                    format!("only {} takes a braced body, not `{}`", takes.join(", "), layer.kind),
                );
                op
            }
            (op, None) => op,
        };
        spans[slot].fields = fields;
        if !matches!(op, Op::Residual(_)) {
            spans[slot].opaque = errors.len() > before;
        }
        let mut spec = LayerSpec::new(op);
        spec.name = layer.name.as_ref().map(layer_name);
        spec.allow_unscaled = layer.allow_unscaled;
        lowered.push(spec);
    }
    lowered
}

/// A layer's name as the parameter prefix and field it becomes: `r#type` is `type` (its field is
/// `r#type` again). Keywords that cannot be raw (`self`, `crate`) never get here: they do not parse
/// as a name.
fn layer_name(name: &syn::Ident) -> String {
    syn::ext::IdentExt::unraw(name).to_string()
}

/// The message for a word that is neither a layer nor an option.
pub fn unknown_layer_message(kind: &str) -> String {
    let hint = suggestion(kind, registry::keywords());
    if hint.is_empty() {
        let kept: Vec<&str> = registry::REGISTRY.iter().filter(|def| def.is_kept()).map(|def| def.keyword).collect();
        format!("unknown layer `{kind}`; expected one of {}", kept.join(", "))
    } else {
        format!("unknown layer `{kind}`{hint}")
    }
}

/// Reads a layer's arguments against its kind's parameters: unknown and duplicate keys, too many
/// positional arguments, wrong types, missing required ones. Every problem is an error spanned
/// on its token; the op is still built so lowering goes on: an extra positional argument is read
/// as the next named parameter not given (`conv(16, 3)` as `kernel = 3`), what cannot be read
/// gets a placeholder and clears `exact`.
fn lower_op(
    def: &'static OpDef,
    layer: &Layer,
    fields: &mut HashMap<LayerField, Span>,
    errors: &mut Errors,
    exact: &mut bool,
) -> Op {
    let kind = layer.kind.to_string();
    let params = match def.params {
        Params::Ignored => return (def.build)(&Args::resolve(def, &[]).expect("no parameters")),
        Params::List(params) => params,
    };
    if params.is_empty() {
        if let Some(args) = &layer.args {
            let span = args.first().map_or(layer.kind.span(), |a| a.value.span);
            errors.error(span, format!("`{kind}` takes no arguments; write `{kind}`"));
        }
        return (def.build)(&Args::resolve(def, &[]).expect("no parameters"));
    }
    let positional: Vec<&Param> = params.iter().filter(|p| p.positional).collect();
    let keys: Vec<&str> = params.iter().filter(|p| !p.positional).map(|p| p.name).collect();
    let mut given: Vec<Option<&Value>> = vec![None; params.len()];
    // A misspelled key or an extra positional argument was reported; a "missing" error for what
    // it meant would repeat it.
    let mut misplaced = false;
    let mut next_positional = 0;
    // The parameters named somewhere in the call, which an extra positional argument must not take.
    let written: Vec<String> =
        layer.args.iter().flatten().filter_map(|a| a.key.as_ref().map(ToString::to_string)).collect();
    let keyed = |i: usize| written.iter().any(|name| name == params[i].name);
    for Arg { key, value } in layer.args.iter().flatten() {
        match key {
            None if next_positional < positional.len() => {
                let index = params.iter().position(|p| std::ptr::eq(p, positional[next_positional])).expect("listed");
                given[index] = Some(value);
                next_positional += 1;
            }
            None => {
                // Read in order as the named parameters not given yet, as a reader would.
                let next = (0..params.len()).find(|&i| !params[i].positional && given[i].is_none() && !keyed(i));
                let reading = next.map_or(String::new(), |i| {
                    format!("; this one reads as `{} = {}`", params[i].name, value_text(value))
                });
                match next {
                    Some(i) => given[i] = Some(value),
                    None => misplaced = true,
                }
                errors.error(
                    value.span,
                    match positional[..] {
                        [] => format!("`{kind}` takes no positional argument; remove it{reading}"),
                        [one] => format!(
                            "`{kind}` takes one positional argument ({}); name the others, e.g. `{}`{reading}",
                            one.meaning, def.example
                        ),
                        _ => format!("too many positional arguments for `{kind}`{reading}"),
                    },
                );
            }
            Some(key) => {
                let name = key.to_string();
                match params.iter().position(|p| !p.positional && p.name == name) {
                    None => {
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
                    }
                    Some(index) if given[index].is_some() => {
                        errors.error(key.span(), format!("duplicate option `{name}`; give it once"));
                    }
                    Some(index) => given[index] = Some(value),
                }
            }
        }
    }
    let mut values = Vec::with_capacity(params.len());
    for (param, value) in params.iter().zip(&given) {
        let Some(value) = value else {
            if param.default == registry::ParamDefault::Required {
                if !misplaced {
                    errors
                        .error(layer.kind.span(), format!("`{kind}` needs {}, e.g. `{}`", param.missing, def.example));
                }
                *exact = false;
                values.push(Some(placeholder(param.kind)));
            } else {
                values.push(None);
            }
            continue;
        };
        fields.entry(param.field).or_insert(value.span);
        let before = errors.len();
        values.push(Some(typed(param, value, errors)));
        *exact &= errors.len() == before;
    }
    (def.build)(&Args::resolve(def, &values).expect("every required argument has a value"))
}

/// A literal as written.
fn value_text(value: &Value) -> String {
    match value.kind {
        ValueKind::Int(v) => v.to_string(),
        ValueKind::NegativeInt(v) => format!("-{v}"),
        ValueKind::Float(v) => v.to_string(),
        ValueKind::Bool(b) => b.to_string(),
    }
}

/// A stand-in for an argument already reported, so lowering can go on.
fn placeholder(kind: ParamKind) -> ArgValue {
    match kind {
        ParamKind::Count => ArgValue::Count(1),
        ParamKind::Number => ArgValue::Number(1.0),
        ParamKind::Flag => ArgValue::Flag(false),
    }
}

/// A literal read as the type its parameter takes, or an error on it.
fn typed(param: &Param, value: &Value, errors: &mut Errors) -> ArgValue {
    let what = if param.positional { "this argument".to_string() } else { format!("`{}`", param.name) };
    match (param.kind, value.kind) {
        (ParamKind::Count, ValueKind::Int(v)) => ArgValue::Count(v as usize),
        (ParamKind::Number, _) if value.as_f64().is_some() => ArgValue::Number(value.as_f64().expect("a number")),
        (ParamKind::Flag, ValueKind::Bool(b)) => ArgValue::Flag(b),
        (kind, _) => {
            let message = match kind {
                ParamKind::Count => format!("expected a nonnegative integer for {what}"),
                ParamKind::Number => format!("expected a number for {what}"),
                ParamKind::Flag => format!("{what} is `true` or `false`"),
            };
            errors.error(value.span, message);
            placeholder(kind)
        }
    }
}
