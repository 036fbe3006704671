//! Bounded threads for the instances of one step: starts, health waits and stops are mostly
//! waiting, so they run side by side, but never more than [`INSTANCES_AT_ONCE`] at a time.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{StepError, StepResult};

/// Instances one step starts, waits for or stops at once, at most: each is a thread that mostly
/// waits, so a service of 2,000 instances gets this many threads, not 2,000.
pub const INSTANCES_AT_ONCE: usize = 32;

/// Runs `work` on every item, on at most [`INSTANCES_AT_ONCE`] threads (none for one item); the
/// results in the items' order. A thread that panics fails the items it had left with
/// [`StepError::Panicked`].
pub(super) fn at_once<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> StepResult<R> + Sync) -> Vec<StepResult<R>> {
    if items.len() <= 1 {
        return items.iter().map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<StepResult<R>>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..items.len().min(INSTANCES_AT_ONCE))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { return done };
                        done.push((i, work(item)));
                    }
                })
            })
            .collect();
        for worker in workers {
            for (i, result) in worker.join().unwrap_or_default() {
                results[i] = Some(result);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StepError::Panicked { what: "an instance's thread" })))
        .collect()
}

/// [`at_once`] when `spread`; otherwise every item in turn on the calling thread (work that
/// returns at once gains nothing from threads but the cost of making them).
pub(super) fn at_once_if<T: Sync, R: Send>(
    spread: bool,
    items: &[T],
    work: impl Fn(&T) -> StepResult<R> + Sync,
) -> Vec<StepResult<R>> {
    if spread { at_once(items, work) } else { items.iter().map(work).collect() }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn at_once_keeps_order_bounds_its_threads_and_turns_a_panic_into_an_error() {
        let (in_flight, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let items: Vec<usize> = (0..500).collect();
        let results = at_once(&items, |&i| {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::yield_now();
            in_flight.fetch_sub(1, Ordering::SeqCst);
            if i == 7 { Err(StepError::NoProvider { account: "seven".into() }) } else { Ok(i * 2) }
        });
        assert_eq!(results.len(), 500);
        for (i, result) in results.iter().enumerate() {
            if i == 7 {
                assert!(matches!(result, Err(StepError::NoProvider { account }) if account == "seven"), "{result:?}");
            } else {
                assert_eq!(result.as_ref().ok(), Some(&(i * 2)), "item {i} in its place");
            }
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=INSTANCES_AT_ONCE).contains(&most), "{most} items at once");

        let one = at_once(&[1], |_| -> StepResult { Ok(()) });
        assert!(matches!(one.as_slice(), [Ok(())]));
        let panicked = at_once(&[1, 2, 3], |&i| if i == 2 { panic!("boom") } else { Ok(i) });
        assert!(panicked.iter().any(|r| matches!(r, Err(StepError::Panicked { .. }))), "{panicked:?}");
    }
}
