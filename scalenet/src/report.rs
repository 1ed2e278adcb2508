use crate::calculus::Plan;
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
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.plan)
    }
}
