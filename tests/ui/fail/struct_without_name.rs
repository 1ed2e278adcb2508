use scalenet::network;

network! {
    pub struct
}

fn main() {}
