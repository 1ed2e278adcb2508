use scalenet::network;

network! {
    pub struct Net {
        input: [3, 32, 32],
        typical_kernel: 5,
        conv1: conv(6, kernel = 5, padding = 2),
        relu,
        flatten,
        fc1: linear(32),
        softmax,
        fc2: linear(10),
    }
}

fn main() {
    // Code that uses the struct compiles against the stub: only the real error is reported.
    let _ = Net::INPUT_SHAPE;
    let _ = Net::report;
}
