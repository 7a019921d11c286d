//! The global-allocator workloads with system as the global allocator
//! (see `benches/global_workloads/mod.rs`).

#[path = "global_workloads/mod.rs"]
mod workloads;

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    workloads::main("system");
}
