use scalenet::network;

network! {
    pub struct Net {
        input: [3, 32],
        fc: linear(10),
    }
}

fn main() {
    // Code that uses the struct compiles against the stub: only the real error is reported.
    let _ = Net::INPUT_SHAPE;
    let _ = Net::report;
}
