//! The global-allocator workloads with jemalloc as the global allocator
//! (see `benches/global_workloads/mod.rs`).

#[path = "global_workloads/mod.rs"]
mod workloads;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    workloads::main("jemalloc");
}
