//! Drives the page API with arbitrary operation sequences against the page
//! model that `tests/random_ops.rs` also uses.
//!
//! RUSTC_BOOTSTRAP=1 cargo fuzz run page_ops
#![no_main]

use libfuzzer_sys::fuzz_target;
use zonealloc::{Arena, PcpConfig, Topology, WatermarkConfig, Watermarks};

#[path = "../../tests/support/page_model.rs"]
mod page_model;

use page_model::{Harness, Op};

fuzz_target!(|input: (u8, Vec<Op>)| {
    let (shape, ops) = input;
    // 1-3 zones of one or two 32-page blocks: small enough that the model's
    // bitmap scan is cheap and allocations often fail. Half the inputs run
    // through small per-thread caches (refills, trims, stranded pages), and
    // half in defrag mode (fallbacks wait for the slow path to split a
    // foreign pageblock).
    let zones = usize::from(shape % 3) + 1;
    let blocks = usize::from(shape / 3 % 2) + 1;
    let pcp = if shape / 6 % 2 == 0 { PcpConfig::Disabled } else { PcpConfig::Fixed { batch: 3, high: 8 } };
    let defrag = shape / 12 % 2 == 1;
    // A quarter of the inputs spread the zones over as many simulated NUMA
    // nodes (one zone each): the zonelist spans nodes, by distance.
    let numa = shape / 24 % 4 == 0 && zones > 1;
    let mut builder = Arena::builder().region_size(zones * blocks * (4096 << 5)).zones(zones);
    if numa {
        builder = builder.zones(1).topology(Topology::simulated(zones).unwrap());
    }
    let arena = builder
        .max_order(5)
        .watermarks(WatermarkConfig::PerZone(Watermarks { min: 0, low: 0, high: 0 }))
        .pcp(pcp)
        .purge_delay(None)
        .defrag_mode(defrag)
        .build()
        .unwrap();
    let mut harness = Harness::new(arena);
    for op in ops.into_iter().take(2000) {
        harness.apply(op);
    }
    harness.finish();
});
