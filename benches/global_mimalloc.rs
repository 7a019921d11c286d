//! The global-allocator workloads with mimalloc as the global allocator
//! (see `benches/global_workloads/mod.rs`).

#[path = "global_workloads/mod.rs"]
mod workloads;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    workloads::main("mimalloc");
}
