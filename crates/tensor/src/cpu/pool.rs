//! A persistent worker pool for the CPU backend's parallel ops.
//!
//! Decode runs a few hundred small parallel ops per token (7 matmuls and an
//! attention per layer). Spawning scoped threads for each cost tens of
//! microseconds an op; here `threads - 1` workers live as long as the backend
//! and wait for work by spinning briefly on an epoch counter (so the next op,
//! microseconds later, starts at once), then sleeping on a condition variable
//! (so an idle engine burns no CPU).
//!
//! One job runs at a time: [`Pool::run`] publishes `f`, runs `f(0)` on the
//! calling thread, `f(1..threads)` on the workers, and returns only after all
//! of them have finished, which is what makes lending `f` (and whatever it
//! borrows from the caller's stack) to the workers sound.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a waiting thread spins before it starts yielding its core
/// (matters when other processes compete for the cores).
const SPIN: Duration = Duration::from_micros(50);

/// How long an idle worker waits (spinning, then yielding) before it sleeps.
const IDLE: Duration = Duration::from_millis(2);

/// A job as the workers see it: the caller's closure with its lifetime erased.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the pointee is `Sync` (shared calls from several threads are fine)
// and `Pool::run` keeps it alive until every worker has finished calling it.
unsafe impl Send for Job {}

struct Shared {
    /// Bumped once per job (and once at shutdown).
    epoch: AtomicU64,
    /// The current job, set before `epoch` is bumped.
    job: Mutex<Option<Job>>,
    /// Workers that have not finished the current job.
    remaining: AtomicUsize,
    /// A worker's call of the current job panicked.
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Workers asleep (or about to sleep) on `wake`.
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `threads - 1` persistent workers plus the calling thread.
pub(crate) struct Pool {
    threads: usize,
    shared: Arc<Shared>,
    /// Serialises callers: one job at a time.
    caller: Mutex<()>,
    handles: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl Pool {
    /// A pool running jobs on `threads` threads (the caller included). If
    /// the OS refuses to start a worker, the pool uses fewer threads.
    pub(crate) fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut handles = Vec::new();
        for i in 1..threads.max(1) {
            let sh = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("zeta-cpu-{i}"))
                .spawn(move || worker(&sh, i));
            match spawned {
                Ok(h) => handles.push(h),
                Err(_) => break,
            }
        }
        Self {
            threads: handles.len() + 1,
            shared,
            caller: Mutex::new(()),
            handles,
        }
    }

    /// Threads a job runs on (the caller included).
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Calls `f(i)` once for every `i < self.threads()`, `f(0)` on the
    /// calling thread, and returns when all calls have returned. A panic in
    /// any call is re-raised here after all calls have finished.
    pub(crate) fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 {
            f(0);
            return;
        }
        let _one_at_a_time = lock(&self.caller);
        let sh = &*self.shared;
        // SAFETY: only the lifetime is erased. Workers call the job only
        // between the epoch bump below and their decrement of `remaining`,
        // and this function does not return (nor unwind) before `remaining`
        // is back to zero, so `f` outlives every use.
        let job = Job(unsafe {
            std::mem::transmute::<
                *const (dyn Fn(usize) + Sync + '_),
                *const (dyn Fn(usize) + Sync + 'static),
            >(f as *const _)
        });
        *lock(&sh.job) = Some(job);
        sh.panicked.store(false, Ordering::Relaxed);
        sh.remaining.store(self.threads - 1, Ordering::SeqCst);
        sh.epoch.fetch_add(1, Ordering::SeqCst);
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = lock(&sh.sleep_lock);
            sh.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        let start = Instant::now();
        let mut spins = 0u32;
        while sh.remaining.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && start.elapsed() > SPIN {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        *lock(&sh.job) = None;
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if sh.panicked.load(Ordering::Acquire) {
            panic!("a zeta CPU worker thread panicked");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let sh = &*self.shared;
        sh.shutdown.store(true, Ordering::SeqCst);
        sh.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _g = lock(&sh.sleep_lock);
            sh.wake.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(sh: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new epoch: spin first, then sleep.
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if sh.epoch.load(Ordering::Acquire) != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            let waited = start.elapsed();
            if waited > IDLE {
                let g = lock(&sh.sleep_lock);
                sh.sleepers.fetch_add(1, Ordering::SeqCst);
                let mut g = g;
                while sh.epoch.load(Ordering::SeqCst) == seen {
                    g = sh.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                sh.sleepers.fetch_sub(1, Ordering::SeqCst);
                drop(g);
                break;
            }
            if waited > SPIN {
                std::thread::yield_now();
            }
        }
        seen = sh.epoch.load(Ordering::Acquire);
        if sh.shutdown.load(Ordering::Acquire) {
            return;
        }
        let job = *lock(&sh.job);
        if let Some(Job(f)) = job {
            // SAFETY: `Pool::run` keeps the closure alive until `remaining`
            // reaches zero, which happens only after this call returns.
            let f = unsafe { &*f };
            if catch_unwind(AssertUnwindSafe(|| f(index))).is_err() {
                sh.panicked.store(true, Ordering::Release);
            }
        }
        sh.remaining.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_index_runs_once_per_job() {
        let pool = Pool::new(3);
        assert_eq!(pool.threads(), 3);
        for _ in 0..1000 {
            let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
            pool.run(&|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            for h in &hits {
                assert_eq!(h.load(Ordering::Relaxed), 1);
            }
        }
    }

    #[test]
    fn wakes_after_sleeping() {
        let pool = Pool::new(2);
        std::thread::sleep(IDLE * 3);
        let n = AtomicUsize::new(0);
        pool.run(&|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn worker_panic_is_reraised_and_pool_survives() {
        let pool = Pool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|i| {
                if i == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(&|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }
}
