use scalenet::network;

network! {
    pub struct Net
}

fn main() {
    // The stub is still generated: code that uses the struct adds no errors of its own.
    let _ = Net::INPUT_SHAPE;
    let _ = Net::report;
}
