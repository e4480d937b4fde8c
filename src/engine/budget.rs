//! The workers that all pairs of one `watch` may run at once. Each pair starts its own pool, but
//! a worker takes a place here for every folder it copies, so that three pairs never run three
//! CPUs' worth of copies on a machine with one, and a pair with a big change can use every CPU
//! while the others are idle (which a fixed split per pair would forbid).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

pub(crate) struct Budget {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A place taken in a budget, given back when dropped.
pub(crate) struct Place<'a>(&'a Budget);

impl Budget {
    pub(crate) fn new(places: usize) -> Budget {
        Budget {
            free: Mutex::new(places.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Waits until a place is free and takes it. A worker holds it only while it works on one
    /// folder, which needs nothing from any other worker, so waiting here cannot deadlock.
    pub(crate) fn take(&self) -> Place<'_> {
        let mut free = self.lock();
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Place(self)
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        *self.0.lock() += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn never_more_at_once_than_the_budget() {
        let budget = Budget::new(2);
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let _place = budget.take();
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::yield_now();
                        now.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(*budget.lock(), 2, "every place given back");
    }
}
