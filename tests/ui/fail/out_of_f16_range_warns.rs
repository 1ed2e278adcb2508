// Without a `precision`, a network that could not train in f16 gets a warning on the layer;
// denied here to show it.
#![deny(deprecated)]
use scalenet::network;

network! {
    pub struct Damped {
        input: [64],
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
