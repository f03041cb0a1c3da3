//! The admission gate of one pool: `size` permits, fair (first come, first served) waiting
//! with a deadline, direct handoff of a returned permit to the oldest waiter.
//!
//! Why not `tokio::sync::Semaphore` with `tokio::time::timeout`: under contention (more
//! clients than server connections) nearly every transaction waits, and each wait then
//! registered and cancelled a timer in the runtime's timer wheel besides the semaphore's own
//! queue operations (a checkout cost 1,529 instructions per relayed transaction at 64 clients
//! on 20 connections; 823 with this gate). Here a wait is one entry in a queue under the
//! gate's lock, and deadlines are enforced by one sweeper task per gate, which sleeps until
//! the earliest deadline in the queue and runs only while somebody waits.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::clock;

/// Longest sleep of the sweeper (so that a deadline shortened by a reload is noticed).
const SWEEP_MAX_MS: u64 = 1000;

/// Why an acquisition failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateError {
    /// No permit is free now ([`Gate::try_acquire`] only).
    Busy,
    /// The deadline passed.
    Timeout,
    /// The gate was closed.
    Closed,
    /// The wait was interrupted ([`Gate::interrupt`]): the pool's server was declared down.
    Interrupted,
}

/// A pool's permits.
pub struct Gate {
    state: Mutex<State>,
}

struct State {
    /// Permits nobody holds (zero whenever somebody waits).
    free: usize,
    /// Returned permits to destroy instead of reuse (the gate shrank below what is held).
    to_forget: usize,
    closed: bool,
    waiters: VecDeque<Waiter>,
    /// A sweeper task is running.
    sweeping: bool,
}

/// What becomes of a wait; written under the gate's lock.
const WAITING: u8 = 0;
const GRANTED: u8 = 1;
const EXPIRED: u8 = 2;
const CLOSED: u8 = 3;
const INTERRUPTED: u8 = 4;

struct Waiter {
    outcome: Arc<AtomicU8>,
    waker: Waker,
    /// On the coarse clock ([`clock::now_ms`]).
    deadline: u64,
}

impl Waiter {
    fn settle(self, outcome: u8) {
        self.outcome.store(outcome, Ordering::Release);
        self.waker.wake();
    }
}

/// One held permit; returned to the gate when dropped.
pub struct Permit {
    gate: Arc<Gate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release();
    }
}

impl Gate {
    /// A gate with `size` permits.
    pub fn new(size: usize) -> Arc<Gate> {
        Arc::new(Gate {
            state: Mutex::new(State {
                free: size,
                to_forget: 0,
                closed: false,
                waiters: VecDeque::new(),
                sweeping: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit if one is free now.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, GateError> {
        let mut st = self.lock();
        if st.closed {
            return Err(GateError::Closed);
        }
        if st.free == 0 {
            return Err(GateError::Busy);
        }
        st.free -= 1;
        Ok(Permit { gate: self.clone() })
    }

    /// Waits for a permit, in turn, for at most `timeout`.
    pub fn acquire(self: &Arc<Self>, timeout: Duration) -> Acquire {
        Acquire {
            gate: self.clone(),
            timeout,
            outcome: None,
        }
    }

    /// Permits nobody holds.
    pub fn available(&self) -> usize {
        self.lock().free
    }

    /// Checkouts waiting for a permit.
    pub fn waiting(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Adds `n` permits (to the oldest waiters first).
    pub fn add(&self, mut n: usize) {
        let mut st = self.lock();
        let cancel = n.min(st.to_forget);
        st.to_forget -= cancel;
        n -= cancel;
        while n > 0 {
            match st.waiters.pop_front() {
                Some(w) => w.settle(GRANTED),
                None => break,
            }
            n -= 1;
        }
        st.free += n;
    }

    /// Removes `n` permits: free ones now, held ones when they come back.
    pub fn remove(&self, n: usize) {
        let mut st = self.lock();
        let now = n.min(st.free);
        st.free -= now;
        st.to_forget += n - now;
    }

    /// Fails every waiter and every later acquisition.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        for w in std::mem::take(&mut st.waiters) {
            w.settle(CLOSED);
        }
    }

    /// Fails the waits under way (not later ones): the server was declared down, and what
    /// waits for it is to be routed again rather than be handed a connection to open there.
    pub fn interrupt(&self) {
        let mut st = self.lock();
        for w in std::mem::take(&mut st.waiters) {
            w.settle(INTERRUPTED);
        }
    }

    fn release(&self) {
        let mut st = self.lock();
        if st.to_forget > 0 {
            st.to_forget -= 1;
            return;
        }
        match st.waiters.pop_front() {
            Some(w) => w.settle(GRANTED),
            None => st.free += 1,
        }
    }

    /// Fails the waits whose deadline passed; returns the earliest deadline left, or `None`
    /// (and stops sweeping) when nobody waits.
    fn expire(&self, now: u64) -> Option<u64> {
        let mut st = self.lock();
        let mut next = None::<u64>;
        let mut i = 0;
        while i < st.waiters.len() {
            let deadline = st.waiters[i].deadline;
            if deadline <= now {
                if let Some(w) = st.waiters.remove(i) {
                    w.settle(EXPIRED);
                }
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
                i += 1;
            }
        }
        if next.is_none() {
            st.sweeping = false;
        }
        next
    }

    /// Enforces the deadlines of waits while there are any.
    async fn sweep(self: Arc<Self>) {
        /// If the task is dropped while sleeping (its runtime shut down), the next wait
        /// starts a new sweeper.
        struct Sweeping(Option<Arc<Gate>>);
        impl Drop for Sweeping {
            fn drop(&mut self) {
                if let Some(gate) = self.0.take() {
                    gate.lock().sweeping = false;
                }
            }
        }
        let mut sweeping = Sweeping(Some(self.clone()));
        loop {
            let now = clock::now_ms();
            let Some(next) = self.expire(now) else {
                // `expire` stopped the sweeping under the lock.
                sweeping.0 = None;
                return;
            };
            // +1: the coarse clock must have passed the deadline when it is read next.
            let ms = (next - now + 1).min(SWEEP_MAX_MS);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

/// A wait for a permit (see [`Gate::acquire`]).
pub struct Acquire {
    gate: Arc<Gate>,
    timeout: Duration,
    /// Set once queued.
    outcome: Option<Arc<AtomicU8>>,
}

impl Future for Acquire {
    type Output = Result<Permit, GateError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let gate = &this.gate;
        if let Some(outcome) = &this.outcome {
            let settled = match outcome.load(Ordering::Acquire) {
                WAITING => {
                    let mut st = gate.lock();
                    // Settled meanwhile (under the lock)? Else make sure the waker is current.
                    let o = outcome.load(Ordering::Acquire);
                    if o == WAITING {
                        if let Some(w) = st
                            .waiters
                            .iter_mut()
                            .find(|w| Arc::ptr_eq(&w.outcome, outcome))
                        {
                            if !w.waker.will_wake(cx.waker()) {
                                w.waker = cx.waker().clone();
                            }
                        }
                        return Poll::Pending;
                    }
                    o
                }
                o => o,
            };
            this.outcome = None;
            return Poll::Ready(match settled {
                GRANTED => Ok(Permit { gate: gate.clone() }),
                EXPIRED => Err(GateError::Timeout),
                INTERRUPTED => Err(GateError::Interrupted),
                _ => Err(GateError::Closed),
            });
        }
        let mut st = gate.lock();
        if st.closed {
            return Poll::Ready(Err(GateError::Closed));
        }
        if st.free > 0 {
            st.free -= 1;
            return Poll::Ready(Ok(Permit { gate: gate.clone() }));
        }
        let outcome = Arc::new(AtomicU8::new(WAITING));
        st.waiters.push_back(Waiter {
            outcome: outcome.clone(),
            waker: cx.waker().clone(),
            deadline: clock::now_ms().saturating_add(clock::ms(this.timeout)),
        });
        if !st.sweeping {
            st.sweeping = true;
            tokio::spawn(gate.clone().sweep());
        }
        this.outcome = Some(outcome);
        Poll::Pending
    }
}

impl Drop for Acquire {
    /// A wait given up: leave the queue, or pass on a permit granted meanwhile.
    fn drop(&mut self) {
        let Some(outcome) = self.outcome.take() else {
            return;
        };
        let granted = {
            let mut st = self.gate.lock();
            match outcome.load(Ordering::Acquire) {
                WAITING => {
                    st.waiters.retain(|w| !Arc::ptr_eq(&w.outcome, &outcome));
                    false
                }
                o => o == GRANTED,
            }
        };
        if granted {
            self.gate.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    const LONG: Duration = Duration::from_secs(30);

    /// A gate of one permit, and that permit.
    fn gate_in_use() -> (Arc<Gate>, Permit) {
        let gate = Gate::new(1);
        let held = gate.try_acquire().expect("free permit");
        (gate, held)
    }

    #[test]
    fn permits_are_handed_to_waiters_in_order() {
        rt().block_on(async {
            let gate = Gate::new(1);
            let first = gate.try_acquire().expect("free permit");
            assert_eq!(gate.try_acquire().err(), Some(GateError::Busy));
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            for i in 0..3 {
                let (gate, order) = (gate.clone(), order.clone());
                tasks.push(tokio::spawn(async move {
                    let p = gate.acquire(LONG).await.expect("permit");
                    order.lock().unwrap().push(i);
                    tokio::task::yield_now().await;
                    drop(p);
                }));
                // Queue them in this order.
                tokio::task::yield_now().await;
            }
            drop(first);
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
            assert_eq!(gate.available(), 1);
        });
    }

    #[test]
    fn a_wait_past_its_deadline_fails_and_leaves_the_queue() {
        rt().block_on(async {
            let (gate, held) = gate_in_use();
            let start = std::time::Instant::now();
            let r = gate.acquire(Duration::from_millis(100)).await;
            assert_eq!(r.err(), Some(GateError::Timeout));
            let waited = start.elapsed();
            assert!(waited >= Duration::from_millis(90), "{waited:?}");
            assert!(waited < Duration::from_secs(10), "{waited:?}");
            assert!(gate.lock().waiters.is_empty());
            // The sweeper stopped with the queue empty; the next wait starts another.
            let r = gate.acquire(Duration::from_millis(20)).await;
            assert_eq!(r.err(), Some(GateError::Timeout));
            drop(held);
            assert_eq!(gate.available(), 1);
        });
    }

    #[test]
    fn deadlines_hold_after_the_runtime_of_a_sweeper_is_gone() {
        let (gate, held) = gate_in_use();
        {
            let rt = rt();
            rt.block_on(async {
                let mut waiting = Box::pin(gate.acquire(LONG));
                assert!(futures_poll(&mut waiting).is_pending());
                // Let the sweeper start and go to sleep.
                tokio::task::yield_now().await;
                assert!(gate.lock().sweeping);
            });
            // Dropping the runtime drops the sleeping sweeper.
        }
        assert!(!gate.lock().sweeping);
        rt().block_on(async {
            let r = gate.acquire(Duration::from_millis(20)).await;
            assert_eq!(r.err(), Some(GateError::Timeout));
        });
        drop(held);
    }

    #[test]
    fn a_wait_dropped_after_its_grant_passes_the_permit_on() {
        rt().block_on(async {
            let (gate, held) = gate_in_use();
            let mut waiting = Box::pin(gate.acquire(LONG));
            assert!(futures_poll(&mut waiting).is_pending());
            drop(held); // granted to `waiting`, which is then dropped unpolled
            drop(waiting);
            assert_eq!(gate.available(), 1);
            // A wait dropped before any grant just leaves the queue.
            let held = gate.try_acquire().expect("free permit");
            let mut waiting = Box::pin(gate.acquire(LONG));
            assert!(futures_poll(&mut waiting).is_pending());
            drop(waiting);
            assert!(gate.lock().waiters.is_empty());
            drop(held);
            assert_eq!(gate.available(), 1);
        });
    }

    #[test]
    fn closing_fails_waiters_and_later_acquisitions() {
        rt().block_on(async {
            let (gate, held) = gate_in_use();
            let waiter = tokio::spawn({
                let gate = gate.clone();
                async move { gate.acquire(LONG).await.err() }
            });
            tokio::task::yield_now().await;
            gate.close();
            assert_eq!(waiter.await.unwrap(), Some(GateError::Closed));
            assert_eq!(gate.acquire(LONG).await.err(), Some(GateError::Closed));
            assert_eq!(gate.try_acquire().err(), Some(GateError::Closed));
            drop(held);
        });
    }

    #[test]
    fn interrupting_fails_the_waiters_but_not_later_acquisitions() {
        rt().block_on(async {
            let (gate, held) = gate_in_use();
            let waiter = tokio::spawn({
                let gate = gate.clone();
                async move { gate.acquire(LONG).await.err() }
            });
            tokio::task::yield_now().await;
            gate.interrupt();
            assert_eq!(waiter.await.unwrap(), Some(GateError::Interrupted));
            assert!(gate.lock().waiters.is_empty());
            // The permit held comes back free, for later checkouts.
            drop(held);
            assert_eq!(gate.available(), 1);
            assert!(gate.acquire(LONG).await.is_ok());
        });
    }

    #[test]
    fn resizing_adds_to_waiters_first_and_shrinks_held_permits_on_return() {
        rt().block_on(async {
            let gate = Gate::new(2);
            let a = gate.try_acquire().expect("a");
            let b = gate.try_acquire().expect("b");
            let waiter = tokio::spawn({
                let gate = gate.clone();
                async move { gate.acquire(LONG).await.ok() }
            });
            tokio::task::yield_now().await;
            gate.add(2); // one to the waiter, one free
            let c = waiter.await.unwrap().expect("granted by add");
            assert_eq!(gate.available(), 1);
            gate.remove(3); // the free one now, two of the held ones when they return
            assert_eq!(gate.available(), 0);
            drop(a);
            drop(b);
            assert_eq!(gate.available(), 0);
            drop(c);
            assert_eq!(gate.available(), 1);
            gate.add(1);
            assert_eq!(gate.available(), 2);
        });
    }

    #[test]
    fn permits_are_neither_lost_nor_exceeded_across_threads() {
        use std::sync::atomic::AtomicUsize;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let gate = Gate::new(3);
            let held = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for i in 0..40 {
                let (gate, held, peak) = (gate.clone(), held.clone(), peak.clone());
                tasks.push(tokio::spawn(async move {
                    for j in 0..50 {
                        // Some waits give up early (short deadline, or dropped by a race with a
                        // timer), exercising removal from the queue and grants to a dropped wait.
                        let wait = gate.acquire(Duration::from_millis(if (i + j) % 7 == 0 {
                            1
                        } else {
                            30_000
                        }));
                        let p = if j % 5 == 0 {
                            match tokio::time::timeout(Duration::from_micros(50), wait).await {
                                Ok(r) => r,
                                Err(_) => continue,
                            }
                        } else {
                            wait.await
                        };
                        let Ok(p) = p else { continue };
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        held.fetch_sub(1, Ordering::SeqCst);
                        drop(p);
                    }
                }));
            }
            // A lost permit would leave tasks waiting forever: fail instead of hanging.
            let all = async {
                for t in tasks {
                    t.await.unwrap();
                }
            };
            tokio::time::timeout(Duration::from_secs(60), all)
                .await
                .expect("every task finished");
            assert!(peak.load(Ordering::SeqCst) <= 3, "{peak:?}");
            assert_eq!(peak.load(Ordering::SeqCst), 3, "the permits were used");
            assert_eq!(gate.available(), 3, "every permit came back");
            assert!(gate.lock().waiters.is_empty());
        });
    }

    /// Polls once with a no-op waker.
    fn futures_poll(f: &mut Pin<Box<Acquire>>) -> Poll<Result<Permit, GateError>> {
        let waker = Waker::noop();
        f.as_mut().poll(&mut Context::from_waker(waker))
    }
}
