//! The C test program (`tests/c/api.c`), built with `cc`, run on the
//! shared library through `LD_PRELOAD` and linked against the static one:
//! every export and edge case, threads freeing each other's memory,
//! destructors that allocate at thread exit, fork in a threaded process.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where cargo put this package's libraries when it built this test: the
/// test's own `deps/` directory (`cargo build` copies them one up).
fn artifacts() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().to_path_buf()
}

fn compile(out: &Path, extra: &[&Path]) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/api.c");
    let status = Command::new("cc")
        .args(["-O1", "-g", "-pthread", "-w", "-o"])
        .arg(out)
        .arg(&source)
        .args(extra)
        .args(["-ldl", "-lm"])
        .status()
        .expect("cc runs");
    assert!(status.success(), "cc failed");
}

/// Checks a run: every part passed, the statistics at exit show that
/// zonealloc served it, and the bad pointers were refused and reported.
fn check(output: Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    for part in ["loader", "contracts", "bad pointers", "introspection", "cross-thread frees", "exit destructors"] {
        assert!(stdout.contains(&format!("{part} ok")), "{part} did not pass:\n{stdout}");
    }
    assert!(stdout.contains("fork in a threaded process ok") && stdout.ends_with("all passed\n"), "{stdout}");
    // Served by zonealloc: its statistics (malloc_stats, then at exit).
    assert_eq!(stderr.matches("# slabinfo").count(), 2, "{stderr}");
    // The stack pointer three times (free, malloc_usable_size, realloc)
    // and the interior pointer once: foreign to the C library.
    assert_eq!(stderr.matches("foreign pointers refused: 4").count(), 2, "{stderr}");
    // Inside the arena: an interior object pointer, a double free, an
    // interior block pointer, a double free of a block.
    assert!(stderr.contains("refused frees: 4\n"), "{stderr}");
    assert_eq!(stderr.matches("double free").count(), 2, "{stderr}");
    assert!(!stderr.contains("FAILED") && !stderr.contains("panicked"), "{stderr}");
}

/// Builds the program as `name` (linked against `library` when `link`),
/// runs it (under `LD_PRELOAD` of `library` otherwise) and checks the run.
fn run(library: &str, name: &str, link: bool) {
    let dir = artifacts();
    let library = dir.join(library);
    assert!(library.exists(), "{} was not built", library.display());
    let program = dir.join(name);
    let linked = [library.as_path()];
    compile(&program, if link { &linked } else { &[] });
    let mut command = Command::new(&program);
    if !link {
        command.env("LD_PRELOAD", &library);
    }
    check(command.env("ZONEALLOC_STATS", "1").output().expect("the program runs"));
}

#[test]
fn the_c_api_under_ld_preload() {
    run("libzonealloc_malloc.so", "c-api-preload", false);
}

#[test]
fn the_c_api_linked_statically() {
    run("libzonealloc_malloc.a", "c-api-static", true);
}
