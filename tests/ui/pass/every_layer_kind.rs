//! Every layer kind, named and unnamed, docs on layers, and a knowingly kept tanh.
use scalenet::candle_core::{DType, Device, Tensor};
use scalenet::candle_nn::{ModuleT, VarMap};
use scalenet::network;

network! {
    /// A network that uses every layer kind.
    #[derive(Debug)]
    pub(crate) struct Everything {
        input: [3, 16, 16],
        init: arithmetic,
        typical_kernel: 3,
        output_std: 0.1,
        fixed_scalars: true,
        /// The stem.
        stem: conv(8, kernel = 3, padding = 1, bias = false),
        relu,
        down: conv(8, kernel = 2, stride = 2),
        leaky_relu(0.2),
        avg_pool(2),
        bias,
        scalar,
        scale(0.5),
        dropout(0.1),
        #[allow(unscaled)]
        tanh,
        flatten,
        head: linear(10, bias = false),
    }
}

fn main() -> scalenet::candle_core::Result<()> {
    let net = Everything::new_seeded(&VarMap::new(), DType::F32, &Device::Cpu, 0)?;
    let y = net.forward_t(&Tensor::zeros((2, 3, 16, 16), DType::F32, &Device::Cpu)?, true)?;
    assert_eq!(y.dims(), [2, 10]);
    let _: [usize; 3] = Everything::INPUT_SHAPE;
    let _: [usize; 1] = Everything::OUTPUT_SHAPE;
    println!("{:?} {}", net.head, Everything::report());
    Ok(())
}
