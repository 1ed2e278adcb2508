// A map beyond the tables of correlations between positions is planned as the paper plans it
// (positions independent and alike), and a warning on `input` says so; denied here to show it.
#![deny(deprecated)]
use scalenet::network;

network! {
    pub struct Wide {
        input: [1, 4096, 4096],
        conv1: conv(1, kernel = 4, stride = 4),
        relu,
        flatten,
        fc: linear(2),
    }
}

fn main() {}
