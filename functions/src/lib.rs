//! # wharf-functions
//!
//! Functions that react to the catalog: pure planners (what should be, from what is) with
//! thin runners that read the store and carry the plan out, so that the same decision is
//! made wherever a runner runs (in `wharf up` and `wharf adapter` today; as AWS Lambda
//! functions next, issue #16).
//!
//! - [`reconcile`]: looks at every resource and writes its status (Ready, Pending with what
//!   it waits for, Failed with why).

pub mod reconcile;
