// The calculus's warnings are real rustc warnings on the layer; denied here to show one.
#![deny(deprecated)]
use scalenet::network;

network! {
    pub struct Pooled {
        input: [3, 16, 16],
        conv1: conv(16, kernel = 3, padding = 1),
        relu,
        conv2: conv(16, kernel = 3, padding = 1),
        relu,
        global_avg_pool,
        fc: linear(10),
    }
}

fn main() {}
