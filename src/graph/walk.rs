//! A generic parallel walker over a DAG: a vertex runs as soon as every vertex it depends on has
//! succeeded (not level by level), at most `parallelism` at once. A failed vertex stops its
//! dependents only (they are skipped, transitively); independent vertices go on. Only root
//! causes are failures; what they prevented is reported as skipped. A vertex whose work
//! panics (a bug) ends as [`Outcome::Panicked`]: the walk goes on and ends, it never waits for
//! ever on a worker that is gone.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// How one vertex ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<E> {
    /// Its work succeeded.
    Done,
    /// Its work failed with this error; its dependents are skipped.
    Failed(E),
    /// Its work panicked (a bug); the panic's message. Its dependents are skipped.
    Panicked(String),
    /// Not run because a vertex it depends on failed or was skipped.
    Skipped,
}

/// A finished vertex's result as the workers send it.
type Finished<E> = (usize, Result<Result<(), E>, String>);

/// The message of a panic's payload (`panic!("…")` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Runs `work(i)` for every vertex `i` of a graph given as `deps[i]` = the vertices `i` waits
/// for. Returns one outcome per vertex. `deps` must be acyclic; a vertex in a cycle is skipped.
pub fn walk<E, F>(deps: &[Vec<usize>], parallelism: usize, work: F) -> Vec<Outcome<E>>
where
    E: Send,
    F: Fn(usize) -> Result<(), E> + Sync,
{
    let n = deps.len();
    let mut outcomes: Vec<Option<Outcome<E>>> = (0..n).map(|_| None).collect();
    if n == 0 {
        return Vec::new();
    }
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = vec![0; n];
    for (i, d) in deps.iter().enumerate() {
        for &j in d {
            if j < n && j != i {
                dependents[j].push(i);
                waiting[i] += 1;
            }
        }
    }
    let ready: VecDeque<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut running = ready.len();
    let queue = Arc::new((Mutex::new((ready, false)), std::sync::Condvar::new()));
    let (done_tx, done_rx) = mpsc::channel::<Finished<E>>();
    let workers = parallelism.clamp(1, n);

    std::thread::scope(|scope| {
        for _ in 0..workers {
            let queue = Arc::clone(&queue);
            let done_tx = done_tx.clone();
            let work = &work;
            scope.spawn(move || {
                loop {
                    let next = {
                        let (lock, ready) = &*queue;
                        let mut guard = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        loop {
                            if let Some(i) = guard.0.pop_front() {
                                break Some(i);
                            }
                            if guard.1 {
                                break None;
                            }
                            guard = ready.wait(guard).unwrap_or_else(std::sync::PoisonError::into_inner);
                        }
                    };
                    let Some(i) = next else { return };
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(i)))
                        .map_err(|payload| panic_message(&*payload));
                    if done_tx.send((i, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);

        let mut finished = 0;
        while running > 0 {
            let Ok((i, result)) = done_rx.recv() else {
                break;
            };
            running -= 1;
            finished += 1;
            let ok = matches!(result, Ok(Ok(())));
            outcomes[i] = Some(match result {
                Ok(Ok(())) => Outcome::Done,
                Ok(Err(e)) => Outcome::Failed(e),
                Err(message) => Outcome::Panicked(message),
            });
            let mut newly_ready = Vec::new();
            if ok {
                for &d in &dependents[i] {
                    waiting[d] -= 1;
                    if waiting[d] == 0 && outcomes[d].is_none() {
                        newly_ready.push(d);
                    }
                }
            } else {
                // Skip everything downstream of the failure.
                let mut stack = dependents[i].clone();
                while let Some(d) = stack.pop() {
                    if outcomes[d].is_none() {
                        outcomes[d] = Some(Outcome::Skipped);
                        finished += 1;
                        stack.extend(dependents[d].iter().copied());
                    }
                }
            }
            if !newly_ready.is_empty() {
                running += newly_ready.len();
                let (lock, ready) = &*queue;
                let mut guard = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                guard.0.extend(newly_ready);
                ready.notify_all();
            }
            if finished >= n {
                break;
            }
        }
        let (lock, ready) = &*queue;
        let mut guard = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.1 = true;
        ready.notify_all();
    });

    outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Skipped)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn dependencies_finish_before_dependents_start() {
        // 0 → 1 → 3, 0 → 2 → 3
        let deps = vec![vec![], vec![0], vec![0], vec![1, 2]];
        let order = Mutex::new(Vec::new());
        let outcomes = walk::<(), _>(&deps, 4, |i| {
            order.lock().unwrap().push(i);
            Ok(())
        });
        assert!(outcomes.iter().all(|o| *o == Outcome::Done));
        let order = order.into_inner().unwrap();
        let pos = |v| order.iter().position(|&x| x == v).unwrap();
        assert!(pos(0) < pos(1) && pos(0) < pos(2) && pos(1) < pos(3) && pos(2) < pos(3));
    }

    #[test]
    fn a_failure_skips_only_its_dependents() {
        // 0 fails; 1 depends on 0; 2 depends on 1; 3 is independent.
        let deps = vec![vec![], vec![0], vec![1], vec![]];
        let outcomes = walk(&deps, 2, |i| if i == 0 { Err("boom") } else { Ok(()) });
        assert_eq!(outcomes, vec![Outcome::Failed("boom"), Outcome::Skipped, Outcome::Skipped, Outcome::Done]);
    }

    #[test]
    fn parallelism_is_a_ceiling_and_is_used() {
        let deps = vec![Vec::new(); 12];
        let now = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        walk::<(), _>(&deps, 4, |_| {
            let c = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(c, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(30));
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        });
        assert_eq!(peak.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_vertex_starts_when_its_own_dependencies_are_done_not_its_level() {
        // Chain a: 0 → 1; chain b: 2 → 3. Vertex 0 holds on until vertex 3 has run: a walk by
        // levels would never run 3 while 0 is running (the wait is bounded, to fail, not hang).
        let deps = vec![vec![], vec![0], vec![], vec![2]];
        let (tx, rx) = mpsc::channel::<()>();
        let tx = Mutex::new(tx);
        let rx = Mutex::new(rx);
        let saw_3 = std::sync::atomic::AtomicBool::new(false);
        walk::<(), _>(&deps, 4, |i| {
            match i {
                0 => saw_3.store(rx.lock().unwrap().recv_timeout(Duration::from_secs(10)).is_ok(), Ordering::SeqCst),
                3 => tx.lock().unwrap().send(()).unwrap(),
                _ => {}
            }
            Ok(())
        });
        assert!(saw_3.load(Ordering::SeqCst), "vertex 3 did not run while vertex 0 was running");
    }

    #[test]
    fn a_panicking_vertex_fails_alone_and_the_walk_ends() {
        // 0 panics; 1 depends on 0; 2 is independent.
        let deps = vec![vec![], vec![0], vec![]];
        let outcomes = walk::<(), _>(&deps, 2, |i| {
            assert_ne!(i, 0, "vertex zero is broken");
            Ok(())
        });
        assert!(matches!(&outcomes[0], Outcome::Panicked(m) if m.contains("vertex zero is broken")), "{outcomes:?}");
        assert_eq!(outcomes[1..], [Outcome::Skipped, Outcome::Done]);
    }

    #[test]
    fn an_empty_graph_is_fine() {
        assert!(walk::<(), _>(&[], 3, |_| Ok(())).is_empty());
    }
}
