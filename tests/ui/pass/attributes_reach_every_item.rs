//! Attributes on the struct reach every generated item: a network gated off by `cfg` leaves no
//! impls behind, and a lint allowed on the struct is allowed in its impls (here the calculus's
//! warning about a global-pool head, which this network keeps knowingly).
#![deny(deprecated)]
use scalenet::network;

network! {
    #[cfg(any())]
    pub struct GatedOff { input: [16], fc: linear(2) }
}

network! {
    #[cfg(all())]
    pub struct GatedOn { input: [16], fc: linear(2) }
}

network! {
    /// Documentation reaches the struct.
    #[allow(deprecated)]
    pub struct KnowinglyPooled {
        input: [3, 16, 16],
        conv1: conv(16, kernel = 3, padding = 1),
        relu,
        global_avg_pool,
        fc: linear(10),
    }
}

fn main() {
    let _ = GatedOn::INPUT_SHAPE;
    let _ = KnowinglyPooled::report;
}
