//! The plan's steps as code: the struct's fields, their constructors, the fixed scalars as named
//! constants, and one forward expression per step. Nothing here is specific to a layer kind but
//! the parameter layers: a stateless op calls the runtime function its registry entry names.

use crate::lower::Spans;
use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};
use scalenet_calculus::registry::{ArgValue, Runtime};
use scalenet_calculus::{Mirror, Op, ParamInit, Step, StepOp, WeightInit};

/// Literals are unsuffixed: every place they land in has a declared type.
pub fn float(value: f64) -> Literal {
    Literal::f64_unsuffixed(value)
}

pub fn int(value: usize) -> Literal {
    Literal::usize_unsuffixed(value)
}

/// An argument value as a literal of the type the runtime takes.
pub fn arg_literal(value: ArgValue) -> TokenStream {
    match value {
        ArgValue::Count(v) => int(v).into_token_stream(),
        ArgValue::Number(v) => float(v).into_token_stream(),
        ArgValue::Flag(v) => quote!(#v),
    }
}

use quote::ToTokens;

/// The struct field named `name`: raw (`r#type`) where `name` is a keyword. Lowering rejects the
/// names that cannot be raw (`self`, `Self`, `super`, `crate`).
pub fn field_ident(name: &str) -> Ident {
    match syn::parse_str::<Ident>(name) {
        Ok(ident) => ident,
        Err(_) => Ident::new_raw(name, proc_macro2::Span::call_site()),
    }
}

/// The struct field type of a layer with parameters.
pub fn field_type(op: &Op) -> Option<TokenStream> {
    match op {
        Op::Conv2d { .. } => Some(quote!(::scalenet::nn::Conv2d)),
        Op::Linear { .. } => Some(quote!(::scalenet::nn::Linear)),
        Op::Scalar => Some(quote!(::scalenet::nn::Scalar)),
        Op::Bias => Some(quote!(::scalenet::nn::Bias)),
        _ => None,
    }
}

/// What the steps of a network contribute to the generated code.
#[derive(Default)]
pub struct Code {
    pub fields: Vec<TokenStream>,
    pub constructors: Vec<TokenStream>,
    /// `const FIXED_<n>: f64`, with the calculus's reasons as their documentation.
    pub constants: Vec<TokenStream>,
    /// One `let xs = ..;` per top-level step, each passed through the hook.
    ///
    /// The forward pass carries `pending: f64`, a fixed multiplier not yet applied to `xs`: the
    /// calculus's fixed scalars multiply it, homogeneous ops (ReLU, pooling, dropout, flatten)
    /// pass it through, and the next convolution or linear layer takes it into its matrix product
    /// (`forward_scaled`), so a fixed scalar costs no pass over an activation. Anything else, and
    /// the hook of `forward_hooked`, applies it first (`settle`), so hooks see every step's output
    /// as the plan defines it.
    pub forward: Vec<TokenStream>,
    pub uses_train: bool,
}

/// Expands the top-level steps of a plan.
pub fn expand_steps(steps: &[Step], vis: &syn::Visibility, spans: &Spans, sn: &Ident) -> Code {
    let mut code = Code::default();
    let mut context = Context { vis, spans, sn, fixed: 0 };
    for (index, step) in steps.iter().enumerate() {
        let expression = context.step(step, "", &mut code);
        let index = int(index);
        code.forward.push(quote!(let xs = hook.after(#index, #expression, &mut pending)?;));
    }
    code
}

struct Context<'a> {
    vis: &'a syn::Visibility,
    /// Where the documentation of every declared layer is.
    spans: &'a Spans,
    /// The generated block's name for `scalenet::__private`.
    sn: &'a Ident,
    fixed: usize,
}

impl Context<'_> {
    /// The expression computing `step`'s output from `xs`; registers its field, constructor and
    /// constant. `prefix` is the parameter path of the enclosing branch (`""` at the top).
    fn step(&mut self, step: &Step, prefix: &str, code: &mut Code) -> TokenStream {
        let sn = self.sn;
        let path = if prefix.is_empty() { step.name.clone() } else { format!("{prefix}.{}", step.name) };
        // Parameter paths are dotted; the struct's fields flatten them with underscores.
        let field = || field_ident(&path.replace('.', "_"));
        let vis = self.vis;
        // Steps a bottleneck spells out carry its id but not its docs.
        let docs: &[syn::Attribute] = match step.op {
            StepOp::Declared { id, .. } if !step.name.is_empty() => self.spans.docs(id),
            _ => &[],
        };
        if let Some(params) = &step.params {
            let field = field();
            let (ty, constructor) = match params {
                ParamInit::Weight(weight) => self.weight_layer(step, weight, &path),
                ParamInit::Scalar { value, fixed } => {
                    let (value, fixed) = (float(*value), float(*fixed));
                    (field_type(&Op::Scalar), quote!(#sn::Scalar::new(vb.pp(#path), #value, #fixed)?))
                }
                ParamInit::Bias { channels } => {
                    let channels = int(*channels);
                    (field_type(&Op::Bias), quote!(#sn::Bias::new(vb.pp(#path), #channels)?))
                }
            };
            code.fields.push(quote!(#(#docs)* #vis #field: #ty));
            code.constructors.push(quote!(#field: #constructor));
            return match params {
                ParamInit::Weight(_) => quote!(self.#field.forward_scaled(&xs, #sn::take(&mut pending))?),
                _ => quote!(#sn::Module::forward(&self.#field, &#sn::settle(xs, &mut pending)?)?),
            };
        }
        match &step.op {
            StepOp::FixedScale { factor, reasons } => {
                let name = format_ident!("FIXED_{}", self.fixed);
                self.fixed += 1;
                let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                let doc = format!(" Fixed scalar inserted by the calculus: {}.", why.join(", "));
                let factor = float(*factor);
                code.constants.push(quote!(#[doc = #doc] const #name: f64 = #factor;));
                quote!(#sn::defer(xs, #name, &mut pending))
            }
            StepOp::Block { alpha, beta, main, shortcut, .. } => {
                let mut branch = |steps: &[Step], name: &str, code: &mut Code| -> Vec<TokenStream> {
                    let prefix = format!("{path}.{name}");
                    steps
                        .iter()
                        .map(|step| {
                            let expression = self.step(step, &prefix, code);
                            quote!(let xs = #expression;)
                        })
                        .collect()
                };
                let main = branch(main, "main", code);
                let shortcut = branch(shortcut, "shortcut", code);
                let (alpha, beta) = (float(*alpha), float(*beta));
                // Each branch starts with the block's pending multiplier and ends with its own,
                // which the weighted sum of the branches applies.
                quote!({
                    let entry = #sn::take(&mut pending);
                    let (main, main_scale) = { let xs = xs.clone(); let mut pending = entry; #(#main)* (xs, pending) };
                    let (shortcut, shortcut_scale) = { let mut pending = entry; #(#shortcut)* (xs, pending) };
                    #sn::ops::weighted_sum(&main, #beta * main_scale, &shortcut, #alpha * shortcut_scale)?
                })
            }
            StepOp::Declared { op, .. } => match op.def().runtime {
                Runtime::Call { function, train, homogeneous } => {
                    let function = Ident::new(function, proc_macro2::Span::call_site());
                    let args = op.args().into_iter().flatten().map(arg_literal);
                    let train = train.then(|| {
                        code.uses_train = true;
                        quote!(train)
                    });
                    let args = args.chain(train);
                    let input = if homogeneous { quote!(&xs) } else { quote!(&#sn::settle(xs, &mut pending)?) };
                    quote!(#sn::ops::#function(#input #(, #args)*)?)
                }
                Runtime::Parameters | Runtime::Branches | Runtime::Rejected => {
                    unreachable!("`{}` reaches code generation only through its parameters or branches", op.keyword())
                }
            },
        }
    }

    /// The field type and constructor of a convolution or linear layer's weight: drawn with the
    /// plan's variance (the mirrored orthogonal version when `init: mirrored`), grouped or centred
    /// as declared.
    fn weight_layer(&self, step: &Step, weight: &WeightInit, path: &str) -> (Option<TokenStream>, TokenStream) {
        let sn = self.sn;
        let g = &weight.geometry;
        let (fan_in, fan_out, std, bias) = (int(g.fan_in), int(g.fan_out), float(weight.std()), weight.bias);
        // Mirrored weights (`init: mirrored`) are drawn the same way, then replaced by
        // their mirrored orthogonal version before first use.
        let mirror = match weight.mirror {
            Mirror::Gaussian => None,
            mirror => {
                let variant = format_ident!(
                    "{}",
                    match mirror {
                        Mirror::Unmirrored => "Unmirrored",
                        Mirror::Outputs => "Outputs",
                        Mirror::Inputs => "Inputs",
                        _ => "Both",
                    }
                );
                Some(quote!(#sn::Mirror::#variant))
            }
        };
        let (ty, constructor) = match (&step.op, mirror) {
            (
                StepOp::Declared { op: op @ Op::Conv2d { out_channels, kernel, stride, padding, groups, .. }, .. },
                mirror,
            ) => {
                let (kernel, stride, padding) = (int(*kernel), int(*stride), int(*padding));
                // The weight is `(out, in / groups, k, k)`: the fan-in is per group.
                let out_channels = int(*out_channels);
                let constructor = match mirror {
                    None => {
                        quote!(#sn::conv2d(vb.pp(#path), #fan_in, #out_channels, #kernel, #stride, #padding, #bias, #std)?)
                    }
                    Some(mirror) => {
                        quote!(#sn::mirrored_conv2d(vb.pp(#path), #fan_in, #out_channels, #kernel, #stride, #padding, #bias, #std, #mirror)?)
                    }
                };
                let constructor = match *groups {
                    1 => constructor,
                    groups => {
                        let groups = int(groups);
                        quote!(#constructor.grouped(#groups))
                    }
                };
                (field_type(op), constructor)
            }
            (StepOp::Declared { op, .. }, None) => {
                (field_type(op), quote!(#sn::linear(vb.pp(#path), #fan_in, #fan_out, #bias, #std)?))
            }
            (StepOp::Declared { op, .. }, Some(mirror)) => {
                (field_type(op), quote!(#sn::mirrored_linear(vb.pp(#path), #fan_in, #fan_out, #bias, #std, #mirror)?))
            }
            _ => unreachable!("a weight is declared"),
        };
        // Centred rows (`centred_weights`) subtract their mean at every forward pass.
        let constructor = if weight.centred { quote!(#constructor.centred()) } else { constructor };
        (ty, constructor)
    }
}
