//! How a process ends with the library as its malloc (issue 25,
//! `tests/c/process_end.c`): a program whose main thread calls
//! `pthread_exit` (alone, after a worker, before a worker), a forked child
//! whose only thread does, exit as on glibc, atexit handlers run; a signal
//! every program thread blocks stays pending. Each run has a bounded wait.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

fn artifacts() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().to_path_buf()
}

/// The program, built once per test run (the tests run at once: one
/// builds, the others wait).
fn program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let out = artifacts().join("c-process-end");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/process_end.c");
        let status = Command::new("cc")
            .args(["-O1", "-g", "-pthread", "-w", "-o"])
            .arg(&out)
            .arg(&source)
            .status()
            .expect("cc runs");
        assert!(status.success(), "cc failed");
        out
    })
}

/// Runs `mode` under `LD_PRELOAD` of the library; its exit code and what
/// it printed. A run that has not ended after 20 s is killed and fails.
fn run(mode: &str) -> (Option<i32>, String) {
    let library = artifacts().join("libzonealloc_malloc.so");
    assert!(library.exists(), "{} was not built", library.display());
    let mut child = Command::new(program())
        .arg(mode)
        .env("LD_PRELOAD", &library)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The pipe reaches its end when the process (every thread of it) has
    // ended: the event waited for, with a bound.
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(text) => (child.wait().unwrap().code(), text),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{mode}` did not end within 20 s: the process is kept alive");
        }
    }
}

#[test]
fn main_calling_pthread_exit_ends_the_process() {
    assert_eq!(run("main-exits"), (Some(0), "atexit ran\n".into()));
}

#[test]
fn main_calling_pthread_exit_after_a_worker_ends_the_process() {
    assert_eq!(run("worker-first"), (Some(0), "atexit ran\n".into()));
}

#[test]
fn a_worker_that_outlives_main_ends_the_process() {
    assert_eq!(run("worker-last"), (Some(0), "worker saw main gone: 1\natexit ran\n".into()));
}

#[test]
fn a_forked_child_whose_thread_ends_exits() {
    // The child's atexit handler runs in the child; the parent's at its end.
    assert_eq!(run("forked-child"), (Some(0), "atexit ran\nchild exited 0\natexit ran\n".into()));
}

#[test]
fn a_signal_every_program_thread_blocks_stays_pending() {
    assert_eq!(run("blocked-signal"), (Some(0), "sigtimedwait 10, handler ran 0 times\natexit ran\n".into()));
}
