//! The global-allocator workloads with zonealloc as the global allocator
//! (see `benches/global_workloads/mod.rs`).

#[path = "global_workloads/mod.rs"]
mod workloads;

#[global_allocator]
static GLOBAL: zonealloc::ZoneAlloc = zonealloc::ZoneAlloc;

fn main() {
    workloads::main("zonealloc");
}
