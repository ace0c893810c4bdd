//! The benchmark harness behind `wal-bench`: the workload generator (`generate`), the
//! in-memory workload and its correctness check (`workload`), the component and native runs
//! (`run`), and the JSON lines and tables (`report`).
//!
//! Timings live here and in the `wal-bench` binary only; the test suite asserts none.

pub mod generate;
pub mod report;
pub mod run;
pub mod workload;

pub use generate::{GENERATION, Generated, Shape, generate};
pub use report::{Record, print_table};
pub use run::{
    ColdStart, RunSettings, cold_start, rss_bytes, run_component, run_concurrent, run_native,
    run_native_concurrent,
};
pub use workload::Workload;
