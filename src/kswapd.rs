//! kswapd's state: how it is woken (`wakeup_kswapd`), how it goes to sleep
//! (`kswapd_try_to_sleep`), its purge timer, its failures, its thread. What
//! it does when awake is in `vmscan.rs`.
//!
//! One thread per NUMA node of an arena (the kernel's `kswapd0`, `kswapd1`,
//! ...), woken for its own node's zones and reclaiming, compacting and
//! purging only those; one thread without NUMA. It sleeps on a condition
//! variable and uses no CPU while every zone of its node is above its low
//! watermark. An allocation that leaves one of them below low wakes it.
//! Sixteen passes in a row without progress (`MAX_RECLAIM_RETRIES`) and it
//! gives up: it sleeps, and wake-ups are ignored until memory is freed on
//! its node or reclaimed anywhere (the kernel's `kswapd_failures`). When
//! `purge_delay` is set it also wakes on a timer while free memory of its
//! node that a purge could hand back is resident.
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
//! re-check sees the lowered free count. The purge timer is the same
//! handshake on `purge_armed`, with frees (and allocations that leave
//! purgeable memory, and frees that keep a 2 MiB block in a thread's
//! cache) as the wakers: `Node::pages_returned`, `Node::zone_allocated`
//! and `Node::huge_block_cached` (`node.rs`), whose barrier is a compiler fence
//! when membarrier is available (the waiting side pays for it; see
//! `support/barrier.rs`). `tests/loom.rs` models both (`kswapd_wakeup_is_not_lost`,
//! `purge_timer_is_set_by_a_free`, `dropping_the_arena_stops_kswapd`):
//! removing the waker's fence, the fence before kswapd's re-check, the
//! freer's purge-timer notify or the notify in `stop` fails its model.

use crate::builder::ReclaimConfig;
use crate::order::Order;
use crate::support::boot::SysBox;
use crate::support::sync::{
    AtomicBool, AtomicU32, AtomicU64, Condvar, Instant, JoinHandle, Mutex, MutexGuard, Ordering, fence,
};

/// Passes without progress before reclaim gives up (`MAX_RECLAIM_RETRIES`).
pub(crate) const MAX_RECLAIM_RETRIES: u32 = 16;

struct KswapdState {
    /// A wake-up arrived since kswapd last looked.
    pending: bool,
    /// While the process's leader is gone: how long kswapd sleeps before it
    /// looks whether the program has ended (`own_thread`); `None` after a
    /// kick, for the shortest interval.
    #[cfg_attr(loom, allow(dead_code))]
    end_poll: Option<std::time::Duration>,
    /// kcompactd's work is waiting (`wakeup_kcompactd`).
    compact_pending: bool,
    /// The arena is dropping.
    stop: bool,
    /// Times kswapd went to sleep, and how many of them with the purge
    /// timer set (kept under the lock, so a reader sees the latest).
    sleeps: u64,
    timed_sleeps: u64,
    /// Wake-ups sent to a sleeping kswapd (to reclaim or set its timer).
    wakeups_sent: u64,
}

/// Why kswapd woke up.
pub(crate) enum Wake {
    /// A zone is below its low watermark.
    Reclaim,
    /// The purge timer fired.
    Purge,
    /// A high-order request wants compaction (kcompactd's wake-up).
    Compact,
    /// The arena is dropping.
    Stop,
}

/// What kswapd looks at before it sleeps, from the layer that owns the
/// zones; `nid` is the NUMA node whose kswapd asks.
pub(crate) trait SleepCheck {
    /// Whether a zone of node `nid` is below its low watermark.
    fn below_low(&self, nid: usize) -> bool;
    /// The waiting side's barrier of the purge-timer handshake.
    fn waiter_barrier(&self);
    /// Whether free memory a purge of node `nid` would hand back is resident.
    fn purgeable(&self, nid: usize) -> bool;
}

/// Every NUMA node's kswapd, in node order: node 0's in place (the one
/// every free and refill of a one-node arena signals, with no pointer to
/// follow), the others out of line.
pub(crate) struct Kswapds {
    first: Kswapd,
    rest: SysBox<[Kswapd]>,
}

impl Kswapds {
    /// A kswapd for each of `nodes` nodes (at least one); `None` if the
    /// memory for them cannot be had.
    pub(crate) fn new(config: ReclaimConfig, nodes: usize) -> Option<Self> {
        let rest = SysBox::<[Kswapd]>::try_from_fn(nodes.saturating_sub(1), |i| {
            Ok::<_, std::convert::Infallible>(Kswapd::new(config, i + 1))
        });
        let Ok(rest) = rest;
        Some(Self { first: Kswapd::new(config, 0), rest: rest? })
    }

    /// Node `nid`'s kswapd (`nid` below the node count).
    #[inline(always)]
    pub(crate) fn get(&self, nid: usize) -> &Kswapd {
        if nid == 0 { &self.first } else { &self.rest[nid - 1] }
    }

    /// How many (one per node).
    pub(crate) fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// Each, in node order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Kswapd> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }
}

/// One NUMA node's kswapd.
pub(crate) struct Kswapd {
    config: ReclaimConfig,
    /// The NUMA node it reclaims for.
    nid: usize,
    state: Mutex<KswapdState>,
    wake: Condvar,
    /// kswapd is running a pass, or about to re-check before sleeping.
    awake: AtomicBool,
    /// kswapd is sleeping with the purge timer set (or about to re-check
    /// for resident free memory): whoever frees memory need not wake it.
    purge_armed: AtomicBool,
    /// Consecutive passes without progress (`kswapd_failures`).
    failures: AtomicU32,
    /// The highest order kcompactd was asked for since it last ran.
    compact_order: AtomicU32,
    /// Reclaim wake-ups this kswapd ran, and its passes.
    wakeups: AtomicU64,
    passes: AtomicU64,
    thread: Mutex<Option<JoinHandle>>,
}

impl Kswapd {
    /// NUMA node `nid`'s kswapd (node 0 without NUMA).
    pub(crate) fn new(config: ReclaimConfig, nid: usize) -> Self {
        Self {
            config,
            nid,
            state: Mutex::new(KswapdState {
                pending: false,
                end_poll: None,
                compact_pending: false,
                stop: false,
                sleeps: 0,
                timed_sleeps: 0,
                wakeups_sent: 0,
            }),
            wake: Condvar::new(),
            awake: AtomicBool::new(false),
            purge_armed: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            compact_order: AtomicU32::new(0),
            wakeups: AtomicU64::new(0),
            passes: AtomicU64::new(0),
            thread: Mutex::new(None),
        }
    }

    /// The NUMA node it reclaims for.
    pub(crate) fn nid(&self) -> usize {
        self.nid
    }

    pub(crate) fn config(&self) -> &ReclaimConfig {
        &self.config
    }

    /// Starts the thread running `body`, unless background reclaim is off
    /// or it runs already. What `body` reads must stay in place until
    /// [`stop`](Self::stop) has returned.
    pub(crate) fn start(&self, body: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        if !self.config.background || self.thread.lock().is_some() {
            return Ok(());
        }
        // Every signal blocked, and ended with the program (`own_thread`).
        // Named as the kernel names them, by node (`kswapd0`); the name is
        // allocated, which is why the global arena starts kswapd late.
        let name = format!("zonealloc-kswapd{}", self.nid);
        #[cfg(not(loom))]
        let handle = crate::support::own_thread::spawn(&name, std::ptr::NonNull::from(self as &dyn OwnThread), body)?;
        #[cfg(loom)]
        let handle = crate::support::sync::spawn(&name, body)?;
        *self.thread.lock() = Some(handle);
        Ok(())
    }

    /// Stops the thread and waits for it to exit.
    pub(crate) fn stop(&self) {
        let Some(handle) = self.thread.lock().take() else { return };
        self.state.lock().stop = true;
        self.wake.notify_one();
        let _ = handle.join();
    }

    /// Whether the arena is dropping.
    pub(crate) fn stopping(&self) -> bool {
        self.state.lock().stop
    }

    /// Takes kswapd's locks across `fork(2)`.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn lock_for_fork(&self) -> KswapdForkGuard<'_> {
        KswapdForkGuard { kswapd: self, thread: self.thread.lock(), state: self.state.lock() }
    }

    /// Whether kswapd has given up (`kswapd_failures >= MAX_RECLAIM_RETRIES`).
    pub(crate) fn hopeless(&self) -> bool {
        self.failures.load(Ordering::Relaxed) >= MAX_RECLAIM_RETRIES
    }

    /// Consecutive fruitless kswapd passes.
    pub(crate) fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// A pass made progress (or found nothing to do).
    pub(crate) fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// A pass freed nothing; `true` when that makes kswapd give up.
    pub(crate) fn failed(&self) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_RECLAIM_RETRIES
    }

    /// Memory was freed or reclaimed: reclaim may be worth trying again.
    #[inline]
    pub(crate) fn memory_freed(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
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

    /// `wakeup_kcompactd`: kcompactd's work for an order-`order` request
    /// found short runs on this thread. Unlike reclaim's wake-up it is not
    /// ignored once reclaim has given up (compaction needs no free memory
    /// from reclaim), and it goes through the lock: it is rare, once per
    /// order above what is already pending.
    pub(crate) fn wakeup_kcompactd(&self, order: Order) {
        if !self.config.background || self.compact_order.fetch_max(order.get(), Ordering::Relaxed) >= order.get() {
            return;
        }
        self.state.lock().compact_pending = true;
        self.wake.notify_one();
    }

    /// The order kcompactd was asked for since it last ran (0: none), now
    /// taken.
    pub(crate) fn take_compact_order(&self) -> Order {
        // Only orders are stored.
        Order::from_bits(self.compact_order.swap(0, Ordering::Relaxed) as u8)
    }

    /// A reclaim wake-up is being run (`Wake::Reclaim`).
    pub(crate) fn count_wakeup(&self) {
        self.wakeups.fetch_add(1, Ordering::Relaxed);
    }

    /// A reclaim pass is being run.
    pub(crate) fn count_pass(&self) {
        self.passes.fetch_add(1, Ordering::Relaxed);
    }

    /// Reclaim wake-ups run and passes made.
    pub(crate) fn runs(&self) -> (u64, u64) {
        (self.wakeups.load(Ordering::Relaxed), self.passes.load(Ordering::Relaxed))
    }

    /// Pages went back to the lists (the caller has just issued its barrier
    /// of the handshake): if kswapd sleeps without its purge timer and
    /// `purgeable` says a purge would now find memory to hand back, wake it
    /// so it sets one. A free that leaves nothing purgeable (with huge
    /// pages: no resident free block of 2 MiB) wakes nobody.
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

    /// `kswapd_try_to_sleep`: sleeps until there is work. `purgeable_since`
    /// is when free memory a purge could hand back was first seen resident
    /// since the last purge: the purge is due `purge_delay` after that,
    /// however often kswapd is woken meanwhile (a timer restarted at every
    /// wake-up never fires in a busy process).
    pub(crate) fn sleep(&self, node: &impl SleepCheck, purgeable_since: &mut Option<Instant>) -> Wake {
        let mut state = self.state.lock();
        let wake = loop {
            if state.stop {
                return Wake::Stop;
            }
            if state.pending {
                state.pending = false;
                // A wake-up that raced the last pass (the waker and the
                // re-check both saw each other) is stale once kswapd has
                // given up: wake-ups are ignored until memory is freed.
                if !self.hopeless() {
                    break Wake::Reclaim;
                }
            }
            if state.compact_pending {
                state.compact_pending = false;
                break Wake::Compact;
            }
            self.awake.store(false, Ordering::Relaxed);
            // Pairs with the waker's fence: a wake-up that skipped the lock
            // because we looked awake is seen by this re-check.
            fence(Ordering::SeqCst);
            if !self.hopeless() && node.below_low(self.nid) {
                break Wake::Reclaim;
            }
            state.sleeps += 1;
            let Some(delay) = self.config.purge_delay else {
                state = self.wait(state, None).0;
                continue;
            };
            // The purge timer's handshake: clear `armed`, barrier, look for
            // resident free memory; a freer that sees `armed` clear takes
            // this lock and notifies.
            self.purge_armed.store(false, Ordering::Relaxed);
            node.waiter_barrier();
            if !node.purgeable(self.nid) {
                *purgeable_since = None;
                state = self.wait(state, None).0;
                continue;
            }
            self.purge_armed.store(true, Ordering::Relaxed);
            let since = *purgeable_since.get_or_insert_with(Instant::now);
            let remaining = delay.saturating_sub(since.elapsed());
            if remaining.is_zero() {
                break Wake::Purge;
            }
            state.timed_sleeps += 1;
            let (guard, timed_out) = self.wait(state, Some(remaining));
            state = guard;
            if timed_out {
                break Wake::Purge;
            }
        };
        self.awake.store(true, Ordering::Relaxed);
        if let Wake::Purge = wake {
            *purgeable_since = None;
        }
        wake
    }
}

impl Kswapd {
    /// Sleeps until notified, or for at most `timeout`; also returns
    /// whether `timeout` passed. While the process's leader is gone, it
    /// wakes on its own timer too and looks whether the program has
    /// ended: if so it sets `stop`, so the caller's loop returns
    /// `Wake::Stop` (`own_thread`).
    fn wait<'a>(
        &'a self,
        state: MutexGuard<'a, KswapdState>,
        timeout: Option<std::time::Duration>,
    ) -> (MutexGuard<'a, KswapdState>, bool) {
        #[cfg(not(loom))]
        if crate::support::own_thread::leader_gone() {
            let mut state = state;
            let poll = crate::support::own_thread::poll_interval(state.end_poll);
            state.end_poll = Some(poll);
            if timeout.is_some_and(|t| t <= poll) {
                return self.wake.wait_timeout(state, timeout.unwrap_or(poll));
            }
            let (mut state, polled) = self.wake.wait_timeout(state, poll);
            if polled && crate::support::own_thread::program_ended() {
                state.stop = true;
                drop(state);
                // The others too; each finds its own `stop` (ours is set).
                crate::support::own_thread::end_all();
                return (self.state.lock(), false);
            }
            // Woken early, or the program goes on: the caller's loop looks
            // at its state and sleeps again (a purge timer restarts from
            // its own start, not from here).
            return (state, false);
        }
        match timeout {
            None => (self.wake.wait(state), false),
            Some(timeout) => self.wake.wait_timeout(state, timeout),
        }
    }
}

#[cfg(not(loom))]
impl crate::support::own_thread::OwnThread for Kswapd {
    fn end(&self) {
        self.state.lock().stop = true;
        self.wake.notify_one();
    }

    fn kick(&self) {
        self.state.lock().end_poll = None;
        self.wake.notify_one();
    }

    fn take_handle(&self) -> Option<JoinHandle> {
        self.thread.lock().take()
    }
}

#[cfg(not(loom))]
use crate::support::own_thread::OwnThread;

/// kswapd's locks, held across `fork(2)`.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct KswapdForkGuard<'a> {
    kswapd: &'a Kswapd,
    thread: MutexGuard<'a, Option<JoinHandle>>,
    state: MutexGuard<'a, KswapdState>,
}

#[cfg_attr(loom, allow(dead_code))]
impl KswapdForkGuard<'_> {
    /// In the child: kswapd was not copied. Forget its handle (joining or
    /// detaching a thread of another process is undefined) so that
    /// [`Kswapd::start`] starts a new one.
    ///
    /// kcompactd's order may have been raised by a waker the fork caught
    /// before it took the lock, or taken by the parent's kswapd before it
    /// ran: the new kswapd finds it pending either way, or a later request
    /// of that order or below would never wake it.
    pub(crate) fn forget_thread(&mut self) {
        std::mem::forget(self.thread.take());
        if self.kswapd.compact_order.load(Ordering::Relaxed) != 0 {
            self.state.compact_pending = true;
        }
    }
}
