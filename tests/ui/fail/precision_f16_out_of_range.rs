// A deep narrow MLP whose `scale(0.1)` layers (which the calculus never cancels) shrink its
// activations and gradients by 3.3 octaves each: f16 cannot hold them at any loss scale.
use scalenet::network;

network! {
    pub struct Damped {
        input: [64],
        precision: f16,
        fc1: linear(16),
        relu,
        scale(0.1),
        fc2: linear(16),
        relu,
        scale(0.1),
        fc3: linear(16),
        relu,
        scale(0.1),
        fc4: linear(16),
        relu,
        scale(0.1),
        fc5: linear(16),
        relu,
        scale(0.1),
        fc6: linear(16),
        relu,
        scale(0.1),
        fc7: linear(16),
        relu,
        scale(0.1),
        fc8: linear(16),
        relu,
        scale(0.1),
        out: linear(10),
    }
}

fn main() {}
