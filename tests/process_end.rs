//! A Rust program on `ZoneAlloc` whose main thread ends with
//! `pthread_exit` (issue 25): the process ends when its last thread does,
//! with status 0 and its atexit handlers run, as on glibc; the
//! allocator's threads (the global kswapd and an arena's) do not keep it
//! alive. `#![no_main]`: std's `main` catches unwinding, and
//! `pthread_exit` unwinds the main thread's stack, so a program that ends
//! its main thread this way has a C `main`.
//!
//! Each scenario runs in a child process of this binary, which must end
//! within 60 s.
#![no_main]
#![cfg(not(loom))]

use std::ffi::{c_char, c_int};
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use zonealloc::{AllocFlags, Arena, ZoneAlloc};

#[global_allocator]
static GLOBAL: ZoneAlloc = ZoneAlloc;

const SCENARIOS: &[(&str, fn())] =
    &[("main_ends_after_its_worker", main_ends_after_its_worker), ("a_worker_outlives_main", a_worker_outlives_main)];

#[unsafe(no_mangle)]
extern "C-unwind" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    if let Ok(name) = std::env::var("ZONEALLOC_SCENARIO") {
        (SCENARIOS.iter().find(|s| s.0 == name).expect("a scenario").1)();
        return 0;
    }
    let mut failed = 0;
    for (name, _) in SCENARIOS {
        match run(name) {
            Ok(()) => println!("test {name} ... ok"),
            Err(why) => {
                println!("test {name} ... FAILED: {why}");
                failed += 1;
            }
        }
    }
    i32::from(failed > 0)
}

/// Runs a scenario in a child; it must end with status 0 within 60 s,
/// having run its atexit handler once.
fn run(name: &str) -> Result<(), String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("ZONEALLOC_SCENARIO", name)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    // The pipe ends when every thread of the child has: the event waited
    // for, with a bound.
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let Ok(stderr) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("still running after 60 s: the process is kept alive".into());
    };
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.code() != Some(0) || stderr.matches("atexit ran").count() != 1 {
        return Err(format!("{status}, stderr:\n{stderr}"));
    }
    Ok(())
}

extern "C" fn say_atexit() {
    let line = b"atexit ran\n";
    // SAFETY: writes our own buffer to stderr.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// The global arena's kswapd and an arena's, both running, and the
/// atexit handler registered.
fn start() -> &'static Arena {
    // SAFETY: an `extern "C" fn` that lives forever.
    unsafe { libc::atexit(say_atexit) };
    std::hint::black_box(vec![0u8; 1 << 20]);
    Box::leak(Box::new(Arena::builder().region_size(64 << 20).build().unwrap()))
}

fn use_arena(arena: &Arena) {
    let page = arena.alloc_pages(0, AllocFlags::empty()).unwrap();
    // SAFETY: allocated just above, freed once.
    unsafe { arena.free_pages(page, 0) }.unwrap();
    std::hint::black_box(vec![1u8; 1000]);
}

fn end_main_thread() -> ! {
    // SAFETY: the main thread ends here; nothing on its stack is used again.
    unsafe { libc::pthread_exit(std::ptr::null_mut()) }
}

/// Main ends with `pthread_exit` after a worker has come and gone.
fn main_ends_after_its_worker() {
    let arena = start();
    std::thread::spawn(move || use_arena(arena)).join().unwrap();
    end_main_thread();
}

/// Main ends first; a worker waits (bounded) until it is gone, uses the
/// allocator again and returns: the process ends with it.
fn a_worker_outlives_main() {
    let arena = start();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        // The main thread is a zombie once it has exited.
        while !std::fs::read_to_string("/proc/self/stat").unwrap().rsplit_once(')').unwrap().1.starts_with(" Z") {
            assert!(Instant::now() < deadline, "main never ended");
            std::thread::yield_now();
        }
        use_arena(arena);
    });
    end_main_thread();
}
