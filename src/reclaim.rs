//! Reclaim: the background reclaim thread (the kernel's kswapd), direct
//! reclaim in the allocating thread, and the progress event NOFAIL callers
//! wait on.
//!
//! **kswapd.** One thread per arena. It sleeps on a condition variable and
//! uses no CPU while every zone is above its low watermark. An allocation
//! that leaves a zone below low wakes it (`wakeup_kswapd`); it then returns
//! every per-thread cache to the lists once and calls the shrinkers until
//! every zone is above high (`balance_pgdat`). Sixteen passes in a row
//! without progress (`MAX_RECLAIM_RETRIES`) and it gives up: it sleeps, and
//! wake-ups are ignored until memory is freed (the kernel's
//! `kswapd_failures`). When `purge_delay` is set it also wakes on a timer
//! while free memory a purge could hand back is resident (with huge pages:
//! free blocks of 2 MiB or more), and hands it back to the OS.
//!
//! **Sleep and wake without a lost wake-up.** Wakers do not take the lock
//! when kswapd is already awake. The pair is a Dekker handshake:
//!
//! ```text
//! waker (allocation left a zone below low)     kswapd (going to sleep)
//!   zone free count lowered (under zone lock)    awake = false
//!   fence(SeqCst)                                fence(SeqCst)
//!   if !awake: lock; pending = true; notify      if a zone is below low: run again
//!                                                else: lock; wait unless pending
//! ```
//!
//! Either the waker sees `awake == false` and sets `pending` under the lock
//! (kswapd checks it under the same lock before waiting), or kswapd's
//! re-check sees the lowered free count. `tests/loom.rs` models it.
//!
//! **Frees wake waiters the same way.** Every free to the lists (and every
//! drain of a cache) may be what a NOFAIL waiter or an idle kswapd without a
//! purge timer waits for. The freer lowers nothing under a lock it could
//! share with them, so it is a Dekker handshake again: waiter registers
//! (`waiters += 1` or `purge_armed = false`), barrier, re-checks the lists;
//! freer updates the lists, barrier, reads the flag. Frees are the hot side,
//! so when membarrier is available the freer's barrier is a compiler fence
//! and the waiter's is `membarrier` (see `barrier.rs`); otherwise both are
//! `SeqCst` fences.
//!
//! **Direct reclaim** runs in the allocating thread when the slow path finds
//! nothing at the min watermark: shrinkers for at least `SWAP_CLUSTER_MAX`
//! pages, then (once) every per-thread cache. A thread that is reclaiming is
//! marked ([`InReclaim`](crate::memalloc::InReclaim), the kernel's `PF_MEMALLOC`): its own allocations,
//! made by shrinkers, ignore watermarks and never recurse into reclaim.

use std::time::Duration;

use crate::arena::ArenaInner;
use crate::builder::ReclaimConfig;
use crate::memalloc::InReclaim;
use crate::sync::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Condvar, Instant, JoinHandle, Mutex, Ordering, fence, spawn,
};
use crate::watermark::Mark;

/// Passes without progress before reclaim gives up (`MAX_RECLAIM_RETRIES`).
pub(crate) const MAX_RECLAIM_RETRIES: u32 = 16;

/// Pages direct reclaim asks the shrinkers for at least (`SWAP_CLUSTER_MAX`).
pub(crate) const SWAP_CLUSTER_MAX: usize = 32;

/// How a NOFAIL caller waits when it cannot tell whether progress will be
/// signalled (pages freed into another thread's cache are not): it retries
/// at least this often. A wait, not a spin.
const NOFAIL_RECHECK: Duration = Duration::from_millis(10);

/// Event counters, read by `stats()`.
#[derive(Default)]
pub(crate) struct ReclaimCounters {
    pub kswapd_wakeups: AtomicU64,
    pub kswapd_passes: AtomicU64,
    pub kswapd_give_ups: AtomicU64,
    pub shrinker_scanned: AtomicU64,
    pub shrinker_freed: AtomicU64,
    pub direct_reclaims: AtomicU64,
    pub direct_reclaim_ns: AtomicU64,
    pub oom_events: AtomicU64,
    pub nofail_waits: AtomicU64,
    pub purges: AtomicU64,
    pub purge_calls: AtomicU64,
    pub purged_pages: AtomicU64,
    pub purge_ns: AtomicU64,
}

impl ReclaimCounters {
    #[inline]
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

struct KswapdState {
    /// A wake-up arrived since kswapd last looked.
    pending: bool,
    /// The arena is dropping.
    stop: bool,
    /// Times kswapd went to sleep, and how many of them with the purge
    /// timer set (kept under the lock, so a reader sees the latest).
    sleeps: u64,
    timed_sleeps: u64,
    /// Wake-ups sent to a sleeping kswapd (to reclaim or set its timer).
    wakeups_sent: u64,
}

/// The progress event NOFAIL callers wait on.
pub(crate) struct Progress {
    generation: Mutex<u64>,
    cond: Condvar,
    waiters: AtomicUsize,
}

impl Progress {
    fn new() -> Self {
        Self { generation: Mutex::new(0), cond: Condvar::new(), waiters: AtomicUsize::new(0) }
    }

    /// Registers a waiter *before* its last attempt, and returns the
    /// generation that attempt saw. The SeqCst increment pairs with the
    /// fence in [`signal`](Self::signal): either the signaller sees the
    /// waiter, or the attempt sees the memory the signaller freed.
    /// `barrier` is the waiting side's full barrier (membarrier when the
    /// freeing side issues only a compiler barrier).
    pub(crate) fn prepare(&self, barrier: impl FnOnce()) -> u64 {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        // The attempt's reads of the free counts are Relaxed: without this
        // barrier they could be satisfied before the increment is visible,
        // and a free in between would be missed by both sides (loom found
        // it: tests/loom.rs, nofail_waiter_is_woken_by_progress).
        barrier();
        *self.generation.lock()
    }

    /// Waits until the generation moves past `seen` (or, as a backstop for
    /// memory freed into per-thread caches, `NOFAIL_RECHECK` passes).
    pub(crate) fn wait(&self, seen: u64) {
        let mut generation = self.generation.lock();
        while *generation == seen {
            let (guard, timed_out) = self.cond.wait_timeout(generation, NOFAIL_RECHECK);
            generation = guard;
            if timed_out {
                break;
            }
        }
        drop(generation);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Undoes `prepare` when the attempt succeeded.
    pub(crate) fn cancel(&self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Memory was freed or reclaimed: wake NOFAIL waiters, if any.
    pub(crate) fn signal(&self) {
        fence(Ordering::SeqCst);
        self.signal_after_fence();
    }

    /// [`signal`](Self::signal) for a caller that has just issued the
    /// `SeqCst` fence itself.
    pub(crate) fn signal_after_fence(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            *self.generation.lock() += 1;
            self.cond.notify_all();
        }
    }
}

/// One arena's reclaim machinery.
pub(crate) struct Reclaimer {
    config: ReclaimConfig,
    state: Mutex<KswapdState>,
    wake: Condvar,
    /// kswapd is running a pass, or about to re-check before sleeping.
    awake: AtomicBool,
    /// kswapd is sleeping with the purge timer set (or about to re-check
    /// for resident free memory): whoever frees memory need not wake it.
    purge_armed: AtomicBool,
    /// Consecutive passes without progress (`kswapd_failures`).
    failures: AtomicU32,
    thread: Mutex<Option<JoinHandle>>,
    /// Held by a purge from isolating free blocks until they are back on
    /// the lists, so `fork(2)` never copies blocks left isolated forever.
    pub purging: Mutex<()>,
    pub progress: Progress,
    pub counters: ReclaimCounters,
}

/// A pointer to the arena that the kswapd thread may carry.
struct ArenaPtr(*const ArenaInner);

// SAFETY: ArenaInner is Sync, and the arena joins the thread before it is
// freed (`Reclaimer::stop`).
unsafe impl Send for ArenaPtr {}

impl Reclaimer {
    pub(crate) fn new(config: ReclaimConfig) -> Self {
        Self {
            config,
            state: Mutex::new(KswapdState { pending: false, stop: false, sleeps: 0, timed_sleeps: 0, wakeups_sent: 0 }),
            wake: Condvar::new(),
            awake: AtomicBool::new(false),
            purge_armed: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            thread: Mutex::new(None),
            purging: Mutex::new(()),
            progress: Progress::new(),
            counters: ReclaimCounters::default(),
        }
    }

    pub(crate) fn config(&self) -> &ReclaimConfig {
        &self.config
    }

    /// Starts kswapd for `arena`, which must stay at this address until
    /// [`stop`](Self::stop) has returned.
    pub(crate) fn start(&self, arena: &ArenaInner) -> std::io::Result<()> {
        if !self.config.background || self.thread.lock().is_some() {
            return Ok(());
        }
        let ptr = ArenaPtr(arena);
        let handle = spawn("zonealloc-kswapd", move || {
            let ptr = ptr;
            // SAFETY: see ArenaPtr.
            let arena = unsafe { &*ptr.0 };
            kswapd(arena);
        })?;
        *self.thread.lock() = Some(handle);
        Ok(())
    }

    /// Takes kswapd's locks across `fork(2)` (the global allocator's atfork
    /// handlers).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn lock_for_fork(&self) -> ReclaimForkGuard<'_> {
        let thread = self.thread.lock();
        let state = self.state.lock();
        let generation = self.progress.generation.lock();
        ReclaimForkGuard { thread, _state: state, _generation: generation }
    }

    /// Stops kswapd and waits for it to exit.
    pub(crate) fn stop(&self) {
        let Some(handle) = self.thread.lock().take() else { return };
        self.state.lock().stop = true;
        self.wake.notify_one();
        let _ = handle.join();
    }

    /// Whether kswapd has given up (`kswapd_failures >= MAX_RECLAIM_RETRIES`).
    pub(crate) fn hopeless(&self) -> bool {
        self.failures.load(Ordering::Relaxed) >= MAX_RECLAIM_RETRIES
    }

    /// Consecutive fruitless kswapd passes.
    pub(crate) fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Memory was freed or reclaimed: reclaim may be worth trying again.
    #[inline]
    pub(crate) fn memory_freed(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Pages went back to the lists (the caller has just issued a `SeqCst`
    /// fence): if kswapd sleeps without its purge timer and `purgeable`
    /// says a purge would now find memory to hand back, wake it so it sets
    /// one. Pairs with the fence before kswapd's re-check (module docs). A
    /// free that leaves nothing purgeable (with huge pages: no resident
    /// free block of 2 MiB) wakes nobody.
    pub(crate) fn arm_purge_timer_after_fence(&self, purgeable: impl FnOnce() -> bool) {
        if self.config.background
            && self.config.purge_delay.is_some()
            && !self.purge_armed.load(Ordering::Relaxed)
            && purgeable()
            && !self.purge_armed.swap(true, Ordering::Relaxed)
        {
            self.state.lock().wakeups_sent += 1;
            self.wake.notify_one();
        }
    }

    /// Times kswapd went to sleep, how many of those with the purge timer
    /// set, and the wake-ups sent to it.
    pub(crate) fn sleeps(&self) -> (u64, u64, u64) {
        let state = self.state.lock();
        (state.sleeps, state.timed_sleeps, state.wakeups_sent)
    }

    /// `wakeup_kswapd`: called after an allocation left a zone below low.
    pub(crate) fn wakeup(&self) {
        if !self.config.background || self.hopeless() {
            return;
        }
        // Pairs with kswapd's fence before its re-check (module docs).
        fence(Ordering::SeqCst);
        if self.awake.load(Ordering::Relaxed) {
            return;
        }
        {
            let mut state = self.state.lock();
            state.pending = true;
            state.wakeups_sent += 1;
        }
        self.wake.notify_one();
    }
}

/// kswapd's locks, held across `fork(2)`.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct ReclaimForkGuard<'a> {
    thread: crate::sync::MutexGuard<'a, Option<JoinHandle>>,
    _state: crate::sync::MutexGuard<'a, KswapdState>,
    _generation: crate::sync::MutexGuard<'a, u64>,
}

#[cfg_attr(loom, allow(dead_code))]
impl ReclaimForkGuard<'_> {
    /// In the child: kswapd was not copied. Forget its handle (joining or
    /// detaching a thread of another process is undefined) so that
    /// [`Reclaimer::start`] starts a new one.
    pub(crate) fn forget_thread(&mut self) {
        std::mem::forget(self.thread.take());
    }
}

/// The kswapd thread.
fn kswapd(arena: &ArenaInner) {
    let r = &arena.reclaim;
    // When free memory a purge could hand back was first seen resident
    // since the last purge: the purge is due `purge_delay` after that,
    // however often kswapd is woken meanwhile (a timer restarted at every
    // wake-up never fires in a busy process).
    let mut purgeable_since: Option<Instant> = None;
    loop {
        // kswapd_try_to_sleep
        let mut purge_due = false;
        {
            let mut state = r.state.lock();
            loop {
                if state.stop {
                    return;
                }
                if state.pending {
                    state.pending = false;
                    // A wake-up that raced the last pass (the waker and
                    // the re-check both saw each other) is stale once
                    // kswapd has given up: wake-ups are ignored until
                    // memory is freed.
                    if !r.hopeless() {
                        break;
                    }
                }
                r.awake.store(false, Ordering::Relaxed);
                // Pairs with the waker's fence: a wake-up that skipped the
                // lock because we looked awake is seen by this re-check.
                fence(Ordering::SeqCst);
                if !r.hopeless() && arena.zones.iter().any(|z| z.below(Mark::Low)) {
                    break;
                }
                state.sleeps += 1;
                match r.config.purge_delay {
                    Some(delay) => {
                        // Same handshake for the purge timer: clear `armed`,
                        // fence, look for resident free memory; a freer that
                        // sees `armed` clear takes this lock and notifies.
                        r.purge_armed.store(false, Ordering::Relaxed);
                        arena.waiter_barrier();
                        if arena.has_purgeable_memory() {
                            r.purge_armed.store(true, Ordering::Relaxed);
                            let since = *purgeable_since.get_or_insert_with(Instant::now);
                            let remaining = delay.saturating_sub(since.elapsed());
                            if remaining.is_zero() {
                                purge_due = true;
                                break;
                            }
                            state.timed_sleeps += 1;
                            let (guard, timed_out) = r.wake.wait_timeout(state, remaining);
                            state = guard;
                            if timed_out {
                                purge_due = true;
                                break;
                            }
                        } else {
                            purgeable_since = None;
                            state = r.wake.wait(state);
                        }
                    }
                    None => state = r.wake.wait(state),
                }
            }
            r.awake.store(true, Ordering::Relaxed);
        }
        if purge_due {
            purgeable_since = None;
            arena.purge_all();
            continue;
        }
        ReclaimCounters::add(&r.counters.kswapd_wakeups, 1);
        balance_pgdat(arena);
    }
}

/// Reclaims until every zone is above its high watermark, or until
/// `MAX_RECLAIM_RETRIES` passes in a row free nothing.
fn balance_pgdat(arena: &ArenaInner) {
    let r = &arena.reclaim;
    let mut drained = false;
    loop {
        if r.state.lock().stop {
            return;
        }
        let deficit: usize =
            arena.zones.iter().map(|z| z.watermarks().high.saturating_sub(z.usable_free_pages())).sum();
        if deficit == 0 && !arena.zones.iter().any(|z| z.below(Mark::High)) {
            r.failures.store(0, Ordering::Relaxed);
            return;
        }
        ReclaimCounters::add(&r.counters.kswapd_passes, 1);
        let mut progress = 0;
        if !drained {
            // Once per wake-up: caches refill at once, and draining them on
            // every pass would look like progress forever.
            progress += arena.drain_all_caches();
            drained = true;
        }
        progress += arena.shrink(deficit.max(SWAP_CLUSTER_MAX));
        if progress > 0 {
            r.failures.store(0, Ordering::Relaxed);
            r.progress.signal();
        } else if r.failures.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_RECLAIM_RETRIES {
            ReclaimCounters::add(&r.counters.kswapd_give_ups, 1);
            return;
        }
    }
}

impl ArenaInner {
    /// Asks the shrinkers for `nr_to_reclaim` pages, marked as reclaiming;
    /// returns the pages they freed. What they freed went into this
    /// thread's own cache: it is returned to the zones at once.
    pub(crate) fn shrink(&self, nr_to_reclaim: usize) -> usize {
        if self.shrinkers.len() == 0 {
            return 0;
        }
        let outcome = {
            let _reclaiming = InReclaim::enter();
            self.shrinkers.shrink(nr_to_reclaim)
        };
        ReclaimCounters::add(&self.reclaim.counters.shrinker_scanned, outcome.scanned as u64);
        ReclaimCounters::add(&self.reclaim.counters.shrinker_freed, outcome.freed as u64);
        self.drain_own_cache();
        outcome.freed
    }

    /// `__alloc_pages_direct_reclaim`: the allocating thread reclaims for
    /// itself. Returns the pages reclaimed.
    pub(crate) fn direct_reclaim(&self, order: u32, drained: &mut bool) -> usize {
        let start = Instant::now();
        let mut progress = self.shrink(SWAP_CLUSTER_MAX.max(1 << order));
        if !*drained {
            progress += self.drain_all_caches();
            *drained = true;
        }
        let r = &self.reclaim;
        ReclaimCounters::add(&r.counters.direct_reclaims, 1);
        ReclaimCounters::add(&r.counters.direct_reclaim_ns, start.elapsed().as_nanos() as u64);
        if progress > 0 {
            r.memory_freed();
            r.progress.signal();
        }
        progress
    }

    /// Whether any zone holds free memory that still costs RSS in blocks a
    /// purge may take (so a purge would do something).
    pub(crate) fn has_purgeable_memory(&self) -> bool {
        self.zones.iter().any(|z| z.purgeable_pages() > 0)
    }
}
