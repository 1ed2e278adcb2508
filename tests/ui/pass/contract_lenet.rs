//! The declaration of the contract, used exactly as shown there.
use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use scalenet::network;

network! {
    /// Strided LeNet for 3x32x32 images (max-pooling replaced by average pooling).
    pub struct LeNet {
        input: [3, 32, 32],          // [C, H, W] or [D]; required
        init: geometric,             // geometric (default) | fan_in | fan_out | arithmetic
        typical_kernel: 5,           // k* in c = 2/k*; default: the most common kernel among weight layers
        output_std: 0.05,            // target output std at initialization; default 0.05
        conv1: conv(6, kernel = 5, padding = 2),
        relu,
        avg_pool(2),
        conv2: conv(16, kernel = 5),
        relu,
        avg_pool(2),
        flatten,
        fc1: linear(120),
        relu,
        fc2: linear(84),
        relu,
        fc3: linear(10),
    }
}

fn main() -> candle_core::Result<()> {
    let images = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu)?;
    let varmap = VarMap::new();
    let net = LeNet::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    let logits = net.forward_t(&images, /* train */ true)?;   // [B, 3, 32, 32] -> [B, 10]
    assert_eq!(logits.dims(), [2, 10]);
    Ok(())
}
