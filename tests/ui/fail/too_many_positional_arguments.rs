use scalenet::network;

network! {
    pub struct Net {
        input: [8, 16, 16],
        typical_kernel: 3,
        conv1: conv(8, 3, padding = 1),
        relu, flatten, fc: linear(10),
    }
}

fn main() {
    // Code that uses the struct compiles against the stub: only the real error is reported.
    let _ = Net::INPUT_SHAPE;
    let _ = Net::report;
}
