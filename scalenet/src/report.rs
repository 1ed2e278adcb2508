use crate::calculus::precision::{OutputGradient, ScalePlan};
use crate::calculus::{Format, Plan};
use std::fmt;

/// A generated network's plan under its name; prints as the table of the struct's documentation.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// The struct's name.
    pub name: &'static str,
    /// Its plan.
    pub plan: &'static Plan,
}

impl Report {
    /// The report of network `name`.
    pub fn new(name: &'static str, plan: &'static Plan) -> Self {
        Report { name, plan }
    }

    /// The loss scale the calculus chooses for training in `format` with a loss whose gradient
    /// is `gradient`, and every step's predicted standard deviations in that format with their
    /// headroom to overflow and to the smallest normal: the report's mixed-precision table
    /// ([`crate::precision`]).
    pub fn scale_plan(&self, format: Format, gradient: OutputGradient) -> ScalePlan<'static> {
        ScalePlan::new(self.plan, format, gradient)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.plan)
    }
}
