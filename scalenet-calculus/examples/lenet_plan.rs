//! Prints the calculus's plan for the strided LeNet: `cargo run -p scalenet-calculus --example lenet_plan`.
use scalenet_calculus::{analyze, NetworkSpec, Op, Shape};

fn main() {
    let conv =
        |out, kernel, padding| Op::Conv2d { out_channels: out, kernel, stride: 1, padding, bias: true, groups: 1 };
    let linear = |out| Op::Linear { out_features: out, bias: true };
    let spec = NetworkSpec::new(Shape::Image { channels: 3, height: 32, width: 32 })
        .with_typical_kernel(5)
        .named("conv1", conv(6, 5, 2))
        .layer(Op::Relu)
        .layer(Op::AvgPool2d { kernel: 2, stride: 2 })
        .named("conv2", conv(16, 5, 0))
        .layer(Op::Relu)
        .layer(Op::AvgPool2d { kernel: 2, stride: 2 })
        .layer(Op::Flatten)
        .named("fc1", linear(120))
        .layer(Op::Relu)
        .named("fc2", linear(84))
        .layer(Op::Relu)
        .named("fc3", linear(10));
    match analyze(&spec) {
        Ok(plan) => println!("{plan}"),
        Err(errors) => eprintln!("{errors}"),
    }
}
