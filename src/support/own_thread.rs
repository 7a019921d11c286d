//! The allocator's own threads (each arena's kswapd) and the end of the
//! process: they never take the program's signals and never keep the
//! process alive.
//!
//! **Signals.** A thread inherits its creator's signal mask, and a signal
//! sent to the process goes to any thread that does not block it. Ours
//! start with every signal blocked, so a signal the program blocks in all
//! its threads (to take it with `sigwait`, `sigtimedwait` or a
//! `signalfd`) stays pending for the program.
//!
//! **The end of the process.** A process whose main thread calls
//! `pthread_exit` lives until its last thread ends; on glibc that thread
//! then calls `exit(0)` (atexit handlers run, status 0). A kswapd asleep
//! would be that last thread forever. The process can only end this way
//! once its leader (main, or a forked child's only thread) has exited, so
//! nothing is watched before that, and nothing runs on the fast paths:
//!
//! - The leader carries a value of a `pthread` key whose destructor runs
//!   when it exits through `pthread_exit` (glibc runs key destructors for
//!   it, not Rust's thread-local ones): [`note_thread`], called when a
//!   thread first uses an arena, sets it on the leader.
//! - Each exiting thread that used an arena (its exit hook) and the leader
//!   (its key destructor) ask [`thread_exiting`] once the leader is gone:
//!   `/proc/self/stat` says how many threads the process has and whether
//!   the leader is a zombie. When every other thread is one of ours, this
//!   is the program's last thread: it ends ours and joins them, so that it
//!   is the one glibc sees last, and the process exits from it exactly as
//!   without the allocator. Otherwise it wakes our threads ([`kick`]).
//! - Two threads that end at the same moment each see the other, and
//!   threads that never used an arena end unseen: so while the leader is
//!   gone, kswapd also looks for itself, after each wake-up and on a timer
//!   that backs off from 1 ms to 1 s ([`poll_interval`]), and ends our
//!   threads when only they are left (the last of them then runs
//!   `exit(0)` in glibc's thread exit).
//!
//! The count is never wrong the dangerous way: a thread of ours counts
//! itself only from its first instruction to its last, so the count is
//! never above the threads of ours that exist, and "every other thread is
//! ours" is never concluded while a program thread lives. (Transient
//! undercounts only delay the answer to the next look.) Our threads never
//! start threads, and once no program thread is left nobody can start one.
//!
//! A forked child has none of the parent's threads: the fork handler
//! empties the list, and its one thread, now the leader, carries the key.
//!
//! Not built under loom, which cannot model `/proc` or `pthread` keys;
//! kswapd's side (asked to end, or woken, under its lock) is the handshake
//! `dropping_the_arena_stops_kswapd` models.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::sync::{JoinHandle, Mutex};

/// What the process-end logic needs of a thread of ours (kswapd).
pub(crate) trait OwnThread: Sync {
    /// Asks the thread to end at its next look; it may be asleep.
    fn end(&self);
    /// Wakes it to look at the process again, its timer reset to the
    /// shortest interval.
    fn kick(&self);
    /// Its handle, for one joiner.
    fn take_handle(&self) -> Option<JoinHandle>;
}

/// A running thread of ours in the process-wide list: on the thread's own
/// stack, linked while the thread runs.
pub(super) struct Member {
    thread: NonNull<dyn OwnThread>,
    next: Cell<Option<NonNull<Member>>>,
    prev: Cell<Option<NonNull<Member>>>,
}

struct List {
    head: Option<NonNull<Member>>,
}

// SAFETY: the list's members are only followed under its lock, and each is
// unlinked (under the lock) before the stack frame holding it ends.
unsafe impl Send for List {}

static LIST: Mutex<List> = Mutex::new(List { head: None });
/// Threads of ours that are running their body (see the module docs).
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// The leader has exited: our threads look at the process from now on.
static LEADER_GONE: AtomicBool = AtomicBool::new(false);
/// The key whose destructor tells us the leader exits (0: none yet).
static KEY: AtomicUsize = AtomicUsize::new(0);
static KEY_MADE: AtomicBool = AtomicBool::new(false);
/// The leader carries the key's value.
static LEADER_NOTED: AtomicBool = AtomicBool::new(false);

/// Spawns a thread of ours running `body` with every signal blocked,
/// counted while it runs. `thread` is what the body serves: it must stay
/// at its address until the thread has been joined.
pub(crate) fn spawn(
    name: &str,
    thread: NonNull<dyn OwnThread>,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle> {
    make_key();
    struct Served(NonNull<dyn OwnThread>);
    // SAFETY: an `OwnThread` is `Sync`, and the spawner keeps it in place
    // until the thread is joined.
    unsafe impl Send for Served {}
    let served = Served(thread);
    let run = move || {
        let served = served;
        RUNNING.fetch_add(1, Ordering::Relaxed);
        let member = Member { thread: served.0, next: Cell::new(None), prev: Cell::new(None) };
        member.link();
        body();
        member.unlink();
        RUNNING.fetch_sub(1, Ordering::Relaxed);
    };
    let all = BlockedSignals::block_all();
    let spawned = crate::support::sync::spawn(name, run);
    drop(all);
    spawned
}

/// The caller's signal mask, every signal blocked until this is dropped
/// (a thread started meanwhile inherits the full mask).
struct BlockedSignals(libc::sigset_t);

impl BlockedSignals {
    fn block_all() -> Self {
        // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask
        // write only the sets they are given.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            Self(old)
        }
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

impl Member {
    fn link(&self) {
        let mut list = LIST.lock();
        self.next.set(list.head);
        self.prev.set(None);
        let me = NonNull::from(self);
        if let Some(head) = list.head {
            // SAFETY: linked members are alive (module docs of `List`).
            unsafe { head.as_ref() }.prev.set(Some(me));
        }
        list.head = Some(me);
    }

    fn unlink(&self) {
        let mut list = LIST.lock();
        let (prev, next) = (self.prev.get(), self.next.get());
        match prev {
            // SAFETY: linked members are alive.
            Some(prev) => unsafe { prev.as_ref() }.next.set(next),
            None => list.head = next,
        }
        if let Some(next) = next {
            // SAFETY: as above.
            unsafe { next.as_ref() }.prev.set(prev);
        }
    }
}

/// Runs `f` on every thread of ours in the list, under the list's lock.
fn for_each(mut f: impl FnMut(&dyn OwnThread)) {
    let list = LIST.lock();
    let mut at = list.head;
    while let Some(member) = at {
        // SAFETY: linked members are alive, and so are the threads they
        // serve (spawn's contract).
        let member = unsafe { member.as_ref() };
        f(unsafe { member.thread.as_ref() });
        at = member.next.get();
    }
}

/// Wakes our threads to look at the process again.
fn kick() {
    for_each(|thread| thread.kick());
}

/// Ends every thread of ours (from one of them: not waiting for any).
pub(crate) fn end_all() {
    for_each(|thread| thread.end());
}

/// Ends every thread of ours and waits for each (from the program's last
/// thread, which must be the last to exit).
fn end_and_join_all() {
    loop {
        let mut handle = None;
        for_each(|thread| {
            thread.end();
            if handle.is_none() {
                handle = thread.take_handle();
            }
        });
        // Joined without the list's lock: the thread unlinks itself.
        match handle {
            Some(handle) => {
                let _ = handle.join();
            }
            None => return,
        }
    }
}

/// Whether the leader has exited, so that our threads look at the process.
#[inline]
pub(crate) fn leader_gone() -> bool {
    LEADER_GONE.load(Ordering::Relaxed)
}

/// How long kswapd sleeps before it looks again while the leader is gone,
/// after `previous` (none: just kicked).
pub(crate) fn poll_interval(previous: Option<Duration>) -> Duration {
    previous.map_or(Duration::from_millis(1), |d| (d * 2).min(Duration::from_secs(1)))
}

/// Whether every thread of the process but `others_allowed` program
/// threads (the caller, the zombie leader) is one of ours, with the
/// leader a zombie unless `leader_alive_ok`.
fn only_ours_left(others_allowed: usize, leader_alive_ok: bool) -> bool {
    let Some((state, threads)) = proc_self_stat() else { return false };
    (leader_alive_ok || state == b'Z') && threads == others_allowed + RUNNING.load(Ordering::Relaxed)
}

/// From one of our threads: whether only ours are left (and the zombie
/// leader), so the program has ended.
pub(crate) fn program_ended() -> bool {
    leader_gone() && only_ours_left(1, false)
}

/// A thread that used an arena is exiting (its exit hook, a thread-local
/// destructor: glibc runs those for the leader only in `exit`, where
/// nothing is to be done). See the module docs.
pub(crate) fn thread_exiting() {
    if !leader_gone() {
        return;
    }
    // This thread and the zombie leader.
    if only_ours_left(2, false) { end_and_join_all() } else { kick() }
}

/// The leader exits through `pthread_exit` (its key's destructor).
extern "C" fn leader_exits(_value: *mut libc::c_void) {
    if only_ours_left(1, true) {
        end_and_join_all();
    } else {
        LEADER_GONE.store(true, Ordering::Relaxed);
        kick();
    }
}

fn is_leader() -> bool {
    // SAFETY: neither call has preconditions.
    unsafe { libc::gettid() == libc::getpid() }
}

/// This thread uses an arena: if it is the leader, it carries the key
/// whose destructor says when it exits.
pub(crate) fn note_thread() {
    if LEADER_NOTED.load(Ordering::Relaxed) || !KEY_MADE.load(Ordering::Acquire) || !is_leader() {
        return;
    }
    // SAFETY: KEY is a key made by `make_key`; any non-null value will do.
    if unsafe { libc::pthread_setspecific(KEY.load(Ordering::Relaxed) as libc::pthread_key_t, std::ptr::dangling()) }
        == 0
    {
        LEADER_NOTED.store(true, Ordering::Relaxed);
    }
}

/// Makes the key and registers the fork handler, once, before the first
/// thread of ours starts.
fn make_key() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: the destructor is an `extern "C" fn` that lives forever.
        if unsafe { libc::pthread_key_create(&mut key, Some(leader_exits)) } == 0 {
            KEY.store(key as usize, Ordering::Relaxed);
            KEY_MADE.store(true, Ordering::Release);
        }
        // SAFETY: handlers with no preconditions, registered once. After
        // the arenas' handlers: run before theirs in `prepare`, so the
        // list's lock comes before any kswapd lock (`end_all` takes them in
        // that order).
        unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    });
    note_thread();
}

/// The list's guard, held across `fork(2)` so that no thread is inside
/// the list then.
struct ForkSlot(std::cell::UnsafeCell<Option<crate::support::sync::MutexGuard<'static, List>>>);

// SAFETY: only the forking thread touches the slot, from the three atfork
// handlers of one fork, which run in sequence on that thread.
unsafe impl Sync for ForkSlot {}

static FORK_HELD: ForkSlot = ForkSlot(std::cell::UnsafeCell::new(None));

extern "C" fn fork_prepare() {
    // SAFETY: see ForkSlot.
    unsafe { *FORK_HELD.0.get() = Some(LIST.lock()) };
}

extern "C" fn fork_parent() {
    // SAFETY: see ForkSlot.
    drop(unsafe { (*FORK_HELD.0.get()).take() });
}

extern "C" fn fork_child() {
    // SAFETY: see ForkSlot.
    if let Some(mut list) = unsafe { (*FORK_HELD.0.get()).take() } {
        // The child has none of the parent's threads: their members are
        // forgotten, never followed.
        list.head = None;
    }
    RUNNING.store(0, Ordering::Relaxed);
    LEADER_GONE.store(false, Ordering::Relaxed);
    LEADER_NOTED.store(false, Ordering::Relaxed);
    // The forking thread is the child's leader.
    note_thread();
}

/// The leader's state and the process's thread count, from
/// `/proc/self/stat` (read without allocating).
fn proc_self_stat() -> Option<(u8, usize)> {
    let mut buf = [0u8; 1024];
    // SAFETY: a NUL-terminated path; the buffer is ours and its length is
    // given; the descriptor is closed once.
    let len = unsafe {
        let fd = libc::open(c"/proc/self/stat".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let len = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        usize::try_from(len).ok()?
    };
    parse_stat(&buf[..len])
}

/// Field 3 (state) and field 20 (num_threads) of a `stat` line; the name
/// (field 2) may hold spaces and parentheses, so fields count from the
/// last `)`.
fn parse_stat(line: &[u8]) -> Option<(u8, usize)> {
    let close = line.iter().rposition(|&b| b == b')')?;
    let mut fields = line[close + 1..].split(|&b| b == b' ').filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    let threads = fields.nth(16)?;
    let threads = std::str::from_utf8(threads).ok()?.parse().ok()?;
    Some((state, threads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_the_state_and_the_thread_count() {
        let line =
            b"4242 (a (b) c) Z 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 12345 1000 200 18446744073709551615";
        assert_eq!(parse_stat(line), Some((b'Z', 3)));
        assert_eq!(parse_stat(b"1 (x) S"), None);
        let (state, threads) = proc_self_stat().unwrap();
        assert!(b"RS".contains(&state));
        assert!(threads >= 1);
    }

    #[test]
    fn the_poll_interval_backs_off_to_a_second() {
        let mut d = poll_interval(None);
        assert_eq!(d, Duration::from_millis(1));
        for _ in 0..20 {
            d = poll_interval(Some(d));
        }
        assert_eq!(d, Duration::from_secs(1));
    }
}
