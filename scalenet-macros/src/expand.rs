//! [`Plan`] -> the candle module. Also the stub emitted beside `compile_error!` when the
//! declaration is invalid, so that code using the struct adds no "cannot find type" noise.

use crate::ast::Network;
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};
use scalenet_calculus::{
    InitScheme, LayerSpec, NetworkSpec, Normalization, Op, ParamInit, Plan, Shape, Step, StepOp, UnscaledActivation,
};

fn float(value: f64) -> Literal {
    Literal::f64_suffixed(value)
}

fn int(value: usize) -> Literal {
    Literal::usize_suffixed(value)
}

fn shape_array(shape: Option<Shape>) -> (TokenStream, TokenStream) {
    let dims: Vec<Literal> = shape.map(|s| s.dims()).unwrap_or_default().into_iter().map(int).collect();
    let rank = int(dims.len());
    (quote!([usize; #rank]), quote!([#(#dims),*]))
}

/// The struct with the declared attributes and an API that type-checks, for invalid declarations.
pub fn stub(network: &Network, input: Option<Shape>) -> TokenStream {
    let Network { attrs, vis, ident, .. } = network;
    let (input_type, input_value) = shape_array(input);
    quote! {
        #(#attrs)*
        #vis struct #ident {}
        impl #ident {
            pub const INPUT_SHAPE: #input_type = #input_value;
            pub fn new(_: ::scalenet::candle_nn::VarBuilder) -> ::scalenet::candle_core::Result<Self> {
                ::core::unreachable!("invalid network! declaration")
            }
            pub fn new_seeded(
                _: &::scalenet::candle_nn::VarMap,
                _: ::scalenet::candle_core::DType,
                _: &::scalenet::candle_core::Device,
                _: u64,
            ) -> ::scalenet::candle_core::Result<Self> {
                ::core::unreachable!("invalid network! declaration")
            }
            pub fn spec() -> ::scalenet::calculus::NetworkSpec {
                ::core::unreachable!("invalid network! declaration")
            }
            pub fn plan() -> &'static ::scalenet::calculus::Plan {
                ::core::unreachable!("invalid network! declaration")
            }
            pub fn report() -> ::scalenet::Report {
                ::core::unreachable!("invalid network! declaration")
            }
            pub fn forward_steps(
                &self,
                _: &::scalenet::candle_core::Tensor,
                _: bool,
            ) -> ::scalenet::candle_core::Result<::std::vec::Vec<::scalenet::candle_core::Tensor>> {
                ::core::unreachable!("invalid network! declaration")
            }
            pub fn calibrate_output(
                &self,
                _: &::scalenet::candle_nn::VarMap,
                _: &::scalenet::candle_core::Tensor,
                _: f64,
            ) -> ::scalenet::candle_core::Result<f64> {
                ::core::unreachable!("invalid network! declaration")
            }
            pub fn forward_hooked(
                &self,
                _: &::scalenet::candle_core::Tensor,
                _: bool,
                _: Option<&mut dyn FnMut(usize, ::scalenet::candle_core::Tensor) -> ::scalenet::candle_core::Result<::scalenet::candle_core::Tensor>>,
            ) -> ::scalenet::candle_core::Result<::scalenet::candle_core::Tensor> {
                ::core::unreachable!("invalid network! declaration")
            }
        }
        impl ::scalenet::candle_nn::ModuleT for #ident {
            fn forward_t(&self, _: &::scalenet::candle_core::Tensor, _: bool) -> ::scalenet::candle_core::Result<::scalenet::candle_core::Tensor> {
                ::core::unreachable!("invalid network! declaration")
            }
        }
    }
}

pub fn expand(network: &Network, spec: &NetworkSpec, plan: &Plan) -> TokenStream {
    let Network { attrs, vis, ident, .. } = network;
    let name = ident.to_string();
    let report_doc = format!("\n\n# Scaling calculus\n\n```text\n{plan}\n```");
    let (input_type, input_value) = shape_array(Some(plan.input));
    let (output_type, output_value) = shape_array(Some(plan.output));

    let mut docs = Vec::new();
    crate::ast::Layer::flatten(&network.layers, &mut docs);
    let docs: Vec<&[syn::Attribute]> = docs.into_iter().map(|layer| layer.docs.as_slice()).collect();
    let mut code = Code::default();
    expand_chain(&plan.steps, "", vis, &docs, &mut code);
    let Code { fields, constructors, forward, has_dropout } = code;

    let spec_tokens = spec_tokens(spec);
    // One statement per top-level step; the hook sees (and may replace) each step's output.
    let hooked = forward.iter().enumerate().map(|(index, statement)| {
        let index = int(index);
        quote! {
            #statement
            let xs = match hook.as_deref_mut() {
                Some(hook) => hook(#index, xs)?,
                None => xs,
            };
        }
    });
    let module_impl = if has_dropout {
        quote! {
            impl ::scalenet::candle_nn::ModuleT for #ident {
                /// `[batch, ...INPUT_SHAPE] -> [batch, ...OUTPUT_SHAPE]`; dropout is active only when `train`.
                fn forward_t(&self, xs: &::scalenet::candle_core::Tensor, train: bool) -> ::scalenet::candle_core::Result<::scalenet::candle_core::Tensor> {
                    self.forward_hooked(xs, train, None)
                }
            }
        }
    } else {
        quote! {
            impl ::scalenet::candle_core::Module for #ident {
                /// `[batch, ...INPUT_SHAPE] -> [batch, ...OUTPUT_SHAPE]`.
                fn forward(&self, xs: &::scalenet::candle_core::Tensor) -> ::scalenet::candle_core::Result<::scalenet::candle_core::Tensor> {
                    self.forward_hooked(xs, false, None)
                }
            }
        }
    };
    let train_unused = (!has_dropout).then(|| quote!(let _ = train;));

    quote! {
        #(#attrs)*
        #[doc = #report_doc]
        #vis struct #ident {
            #(#fields,)*
            /// Output calibration (section 7), 1 until [`Self::calibrate_output`] sets it; kept in the
            /// `VarMap` as `output_calibration` so it is saved and loaded with the weights, and
            /// applied detached so no optimizer trains it.
            #vis output_calibration: ::scalenet::candle_core::Tensor,
        }

        // The calculus's constants are emitted as computed literals; some land near 1/√2 or √2.
        #[allow(clippy::approx_constant)]
        impl #ident {
            /// Per-sample input shape, `[C, H, W]` or `[D]`.
            pub const INPUT_SHAPE: #input_type = #input_value;
            /// Per-sample output shape.
            pub const OUTPUT_SHAPE: #output_type = #output_value;

            /// Creates the parameters through `vb` (`<layer>.weight`, `<layer>.bias`, candle-nn layout),
            /// drawn with the variances the calculus chose; biases start at zero. With a `VarMap`
            /// backend the draws come from candle's RNG, which cannot be seeded on CPU: use
            /// [`Self::new_seeded`] for reproducible runs, or load trained weights through `vb`.
            pub fn new(vb: ::scalenet::candle_nn::VarBuilder) -> ::scalenet::candle_core::Result<Self> {
                Ok(Self {
                    #(#constructors,)*
                    output_calibration: vb.get_with_hints((), "output_calibration", ::scalenet::candle_nn::Init::Const(1.0))?,
                })
            }

            /// Creates the parameters in `varmap`, drawn from a `rand` generator seeded with `seed`
            /// and the parameter's name: the same seed gives the same values on every device.
            pub fn new_seeded(
                varmap: &::scalenet::candle_nn::VarMap,
                dtype: ::scalenet::candle_core::DType,
                device: &::scalenet::candle_core::Device,
                seed: u64,
            ) -> ::scalenet::candle_core::Result<Self> {
                Self::new(::scalenet::init::seeded_var_builder(varmap, seed, dtype, device))
            }

            /// The declaration, as the calculus reads it.
            pub fn spec() -> ::scalenet::calculus::NetworkSpec {
                #spec_tokens
            }

            /// The calculus's plan: every op, init variance, fixed scalar and predicted moment.
            pub fn plan() -> &'static ::scalenet::calculus::Plan {
                static PLAN: ::std::sync::OnceLock<::scalenet::calculus::Plan> = ::std::sync::OnceLock::new();
                PLAN.get_or_init(|| {
                    ::scalenet::calculus::analyze(&Self::spec()).expect("network! checked this declaration at compile time")
                })
            }

            /// The output of every top-level step of [`Self::plan`] (`plan().steps`, fixed scalars and
            /// whole residual blocks included), in order: for measuring what the calculus predicts.
            pub fn forward_steps(
                &self,
                xs: &::scalenet::candle_core::Tensor,
                train: bool,
            ) -> ::scalenet::candle_core::Result<::std::vec::Vec<::scalenet::candle_core::Tensor>> {
                let mut trace = ::std::vec::Vec::new();
                let mut record = |_: usize, xs: ::scalenet::candle_core::Tensor| {
                    trace.push(xs.clone());
                    Ok(xs)
                };
                self.forward_hooked(xs, train, Some(&mut record))?;
                Ok(trace)
            }

            /// The forward pass with `hook(step, output)` called after every top-level step of
            /// `plan().steps`; what it returns continues the pass (add a zero probe variable there
            /// to read `dL/dx` of that activation, which candle's `GradStore` does not keep).
            pub fn forward_hooked(
                &self,
                xs: &::scalenet::candle_core::Tensor,
                train: bool,
                mut hook: Option<&mut dyn FnMut(usize, ::scalenet::candle_core::Tensor) -> ::scalenet::candle_core::Result<::scalenet::candle_core::Tensor>>,
            ) -> ::scalenet::candle_core::Result<::scalenet::candle_core::Tensor> {
                #train_unused
                ::scalenet::nn::check_input(xs, &Self::INPUT_SHAPE, #name)?;
                let xs = xs.clone();
                #(#hooked)*
                xs.broadcast_mul(&self.output_calibration.detach().to_dtype(xs.dtype())?)
            }

            /// Sets the output calibration so that the output standard deviation on `xs` (evaluation
            /// mode) is `target_std` (the paper uses 0.05), as section 7 and the paper's experiments do
            /// after one batch. `varmap` must hold this network's variables. Returns the new factor.
            pub fn calibrate_output(
                &self,
                varmap: &::scalenet::candle_nn::VarMap,
                xs: &::scalenet::candle_core::Tensor,
                target_std: f64,
            ) -> ::scalenet::candle_core::Result<f64> {
                ::scalenet::nn::calibrate(varmap, &self.forward_hooked(xs, false, None)?, target_std)
            }

            /// The plan as a table (`Display`), the same one as in this struct's documentation.
            pub fn report() -> ::scalenet::Report {
                ::scalenet::Report::new(#name, Self::plan())
            }
        }

        #module_impl

        #[allow(clippy::approx_constant)]
        impl ::scalenet::Network for #ident {
            const NAME: &'static str = #name;

            fn plan() -> &'static ::scalenet::calculus::Plan {
                Self::plan()
            }

            fn new_seeded(
                varmap: &::scalenet::candle_nn::VarMap,
                dtype: ::scalenet::candle_core::DType,
                device: &::scalenet::candle_core::Device,
                seed: u64,
            ) -> ::scalenet::candle_core::Result<Self> {
                Self::new_seeded(varmap, dtype, device, seed)
            }

            fn forward_hooked(
                &self,
                xs: &::scalenet::candle_core::Tensor,
                train: bool,
                hook: Option<&mut dyn FnMut(usize, ::scalenet::candle_core::Tensor) -> ::scalenet::candle_core::Result<::scalenet::candle_core::Tensor>>,
            ) -> ::scalenet::candle_core::Result<::scalenet::candle_core::Tensor> {
                Self::forward_hooked(self, xs, train, hook)
            }
        }
    }
}

/// What the steps of a network contribute to the generated code.
#[derive(Default)]
struct Code {
    fields: Vec<TokenStream>,
    constructors: Vec<TokenStream>,
    forward: Vec<TokenStream>,
    has_dropout: bool,
}

/// Expands `steps`, whose parameters live under `prefix` (`""` at the top, `res1.main` in a branch).
fn expand_chain(steps: &[Step], prefix: &str, vis: &syn::Visibility, all_docs: &[&[syn::Attribute]], code: &mut Code) {
    for step in steps {
        let path = if prefix.is_empty() { step.name.clone() } else { format!("{prefix}.{}", step.name) };
        // Parameter paths are dotted; the struct's fields flatten them with underscores.
        let field = || format_ident!("{}", path.replace('.', "_"));
        // Steps a bottleneck spells out carry its index but not its docs.
        let docs: &[syn::Attribute] = match step.op {
            StepOp::Declared { index, .. } if !step.name.is_empty() => all_docs.get(index).copied().unwrap_or_default(),
            _ => &[],
        };
        match &step.params {
            Some(ParamInit::Weight(weight)) => {
                let field = field();
                let g = &weight.geometry;
                let (fan_in, fan_out, std, bias) = (int(g.fan_in), int(g.fan_out), float(weight.std()), weight.bias);
                match step.op {
                    StepOp::Declared { op: Op::Conv2d { kernel, stride, padding, .. }, .. } => {
                        let (kernel, stride, padding) = (int(kernel), int(stride), int(padding));
                        code.fields.push(quote!(#(#docs)* #vis #field: ::scalenet::nn::Conv2d));
                        code.constructors.push(quote! {
                            #field: ::scalenet::nn::conv2d(vb.pp(#path), #fan_in, #fan_out, #kernel, #stride, #padding, #bias, #std)?
                        });
                    }
                    _ => {
                        code.fields.push(quote!(#(#docs)* #vis #field: ::scalenet::candle_nn::Linear));
                        code.constructors.push(quote! {
                            #field: ::scalenet::nn::linear(vb.pp(#path), #fan_in, #fan_out, #bias, #std)?
                        });
                    }
                }
                code.forward.push(quote!(let xs = ::scalenet::candle_core::Module::forward(&self.#field, &xs)?;));
            }
            Some(ParamInit::Scalar { value, fixed }) => {
                let field = field();
                let (value, fixed) = (float(*value), float(*fixed));
                code.fields.push(quote!(#(#docs)* #vis #field: ::scalenet::nn::Scalar));
                code.constructors.push(quote!(#field: ::scalenet::nn::Scalar::new(vb.pp(#path), #value, #fixed)?));
                code.forward.push(quote!(let xs = ::scalenet::candle_core::Module::forward(&self.#field, &xs)?;));
            }
            Some(ParamInit::Bias { channels }) => {
                let field = field();
                let channels = int(*channels);
                code.fields.push(quote!(#(#docs)* #vis #field: ::scalenet::nn::Bias));
                code.constructors.push(quote!(#field: ::scalenet::nn::Bias::new(vb.pp(#path), #channels)?));
                code.forward.push(quote!(let xs = ::scalenet::candle_core::Module::forward(&self.#field, &xs)?;));
            }
            None => match &step.op {
                StepOp::FixedScale { factor, .. } => {
                    let factor = float(*factor);
                    code.forward.push(quote!(let xs = (&xs * #factor)?;));
                }
                StepOp::Block { alpha, beta, main, shortcut, .. } => {
                    let branch = |steps: &[Step], name: &str, code: &mut Code| {
                        let outer = std::mem::take(&mut code.forward);
                        expand_chain(steps, &format!("{path}.{name}"), vis, all_docs, code);
                        std::mem::replace(&mut code.forward, outer)
                    };
                    let main = branch(main, "main", code);
                    let shortcut = branch(shortcut, "shortcut", code);
                    let (alpha, beta) = (float(*alpha), float(*beta));
                    code.forward.push(quote! {
                        let xs = {
                            let main = { let xs = xs.clone(); #(#main)* (xs * #beta)? };
                            let shortcut = { #(#shortcut)* (xs * #alpha)? };
                            (main + shortcut)?
                        };
                    });
                }
                StepOp::Declared { op, .. } => {
                    code.has_dropout |= matches!(op, Op::Dropout { .. });
                    code.forward.push(stateless_forward(op));
                }
            },
        }
    }
}

fn stateless_forward(op: &Op) -> TokenStream {
    match *op {
        Op::AvgPool2d { kernel, .. } => {
            let kernel = int(kernel);
            quote!(let xs = xs.avg_pool2d(#kernel)?;)
        }
        Op::Relu => quote!(let xs = xs.relu()?;),
        Op::LeakyRelu { slope } => {
            let slope = float(slope);
            quote!(let xs = ::scalenet::candle_nn::ops::leaky_relu(&xs, #slope)?;)
        }
        Op::Dropout { p } => {
            let p = Literal::f32_suffixed(p as f32);
            quote!(let xs = if train { ::scalenet::candle_nn::ops::dropout(&xs, #p)? } else { xs };)
        }
        Op::Flatten => quote!(let xs = xs.flatten_from(1)?;),
        Op::Scale { factor } => {
            let factor = float(factor);
            quote!(let xs = (&xs * #factor)?;)
        }
        Op::Unscaled(activation) => match activation {
            UnscaledActivation::Sigmoid => {
                quote!(let xs = ::scalenet::candle_nn::ops::sigmoid(&xs)?;)
            }
            UnscaledActivation::Tanh => quote!(let xs = xs.tanh()?;),
            UnscaledActivation::Gelu => quote!(let xs = xs.gelu_erf()?;),
            UnscaledActivation::Silu => quote!(let xs = xs.silu()?;),
            UnscaledActivation::Elu => quote!(let xs = xs.elu(1.0)?;),
            UnscaledActivation::Softplus => quote!(let xs = ::scalenet::nn::softplus(&xs)?;),
            UnscaledActivation::Softmax => {
                quote!(let xs = ::scalenet::candle_nn::ops::softmax(&xs, 1)?;)
            }
        },
        Op::Conv2d { .. }
        | Op::Linear { .. }
        | Op::Scalar
        | Op::Bias
        | Op::MaxPool2d { .. }
        | Op::Normalization(_)
        | Op::Residual(_)
        | Op::Bottleneck { .. } => {
            unreachable!("parameter layers are expanded with their fields; rejected ops never reach expansion")
        }
    }
}

fn spec_tokens(spec: &NetworkSpec) -> TokenStream {
    let calculus = quote!(::scalenet::calculus);
    let input = match spec.input.expect("checked") {
        Shape::Image { channels, height, width } => {
            let (c, h, w) = (int(channels), int(height), int(width));
            quote!(#calculus::Shape::Image { channels: #c, height: #h, width: #w })
        }
        Shape::Vector { features } => {
            let d = int(features);
            quote!(#calculus::Shape::Vector { features: #d })
        }
    };
    let init = match spec.init {
        InitScheme::Geometric => quote!(Geometric),
        InitScheme::FanIn => quote!(FanIn),
        InitScheme::FanOut => quote!(FanOut),
        InitScheme::Arithmetic => quote!(Arithmetic),
    };
    let typical = match spec.typical_kernel {
        Some(k) => {
            let k = int(k);
            quote!(Some(#k))
        }
        None => quote!(None),
    };
    let output_std = float(spec.output_std);
    let fixed_scalars = spec.fixed_scalars;
    let branch_scaling = spec.branch_scaling;
    let layers = layer_tokens(&spec.layers);
    quote! {
        #calculus::NetworkSpec {
            input: Some(#input),
            init: #calculus::InitScheme::#init,
            typical_kernel: #typical,
            output_std: #output_std,
            fixed_scalars: #fixed_scalars,
            branch_scaling: #branch_scaling,
            layers: #layers,
        }
    }
}

fn layer_tokens(layers: &[LayerSpec]) -> TokenStream {
    let layers = layers.iter().map(|layer| {
        let name = match &layer.name {
            Some(name) => quote!(Some(::std::string::String::from(#name))),
            None => quote!(None),
        };
        let op = op_tokens(&layer.op);
        let allow = layer.allow_unscaled;
        quote!(::scalenet::calculus::LayerSpec { name: #name, op: #op, allow_unscaled: #allow })
    });
    quote!(::std::vec![#(#layers),*])
}

fn op_tokens(op: &Op) -> TokenStream {
    let op_path = quote!(::scalenet::calculus::Op);
    match *op {
        Op::Conv2d { out_channels, kernel, stride, padding, bias } => {
            let (o, k, s, p) = (int(out_channels), int(kernel), int(stride), int(padding));
            quote!(#op_path::Conv2d { out_channels: #o, kernel: #k, stride: #s, padding: #p, bias: #bias })
        }
        Op::Linear { out_features, bias } => {
            let o = int(out_features);
            quote!(#op_path::Linear { out_features: #o, bias: #bias })
        }
        Op::AvgPool2d { kernel, stride } => {
            let (k, s) = (int(kernel), int(stride));
            quote!(#op_path::AvgPool2d { kernel: #k, stride: #s })
        }
        Op::MaxPool2d { kernel, stride } => {
            let (k, s) = (int(kernel), int(stride));
            quote!(#op_path::MaxPool2d { kernel: #k, stride: #s })
        }
        Op::Relu => quote!(#op_path::Relu),
        Op::LeakyRelu { slope } => {
            let slope = float(slope);
            quote!(#op_path::LeakyRelu { slope: #slope })
        }
        Op::Unscaled(activation) => {
            let variant = format_ident!("{}", format!("{activation:?}"));
            quote!(#op_path::Unscaled(::scalenet::calculus::UnscaledActivation::#variant))
        }
        Op::Normalization(norm) => {
            let variant = match norm {
                Normalization::BatchNorm => quote!(BatchNorm),
                Normalization::LayerNorm => quote!(LayerNorm),
                Normalization::GroupNorm => quote!(GroupNorm),
            };
            quote!(#op_path::Normalization(::scalenet::calculus::Normalization::#variant))
        }
        Op::Dropout { p } => {
            let p = float(p);
            quote!(#op_path::Dropout { p: #p })
        }
        Op::Flatten => quote!(#op_path::Flatten),
        Op::Scale { factor } => {
            let factor = float(factor);
            quote!(#op_path::Scale { factor: #factor })
        }
        Op::Scalar => quote!(#op_path::Scalar),
        Op::Bias => quote!(#op_path::Bias),
        Op::Residual(ref block) => {
            let option = |value: Option<f64>| match value {
                Some(v) => {
                    let v = float(v);
                    quote!(Some(#v))
                }
                None => quote!(None),
            };
            let (alpha, beta) = (option(block.alpha), option(block.beta));
            let main = layer_tokens(&block.main);
            let shortcut = match &block.shortcut {
                Some(layers) => {
                    let layers = layer_tokens(layers);
                    quote!(Some(#layers))
                }
                None => quote!(None),
            };
            quote!(#op_path::Residual(::scalenet::calculus::Residual { alpha: #alpha, beta: #beta, main: #main, shortcut: #shortcut }))
        }
        Op::Bottleneck { out_channels, width, stride, beta } => {
            let (o, w, s, b) = (int(out_channels), int(width), int(stride), float(beta));
            quote!(#op_path::Bottleneck { out_channels: #o, width: #w, stride: #s, beta: #b })
        }
    }
}
