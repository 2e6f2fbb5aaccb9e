//! Work split over the cores the process may run on, on scoped threads.

/// How many parts to split `items` into: one per core, each of at least `min_part` items.
pub fn parts_for(items: usize, min_part: usize) -> usize {
    // Asking for the cores costs tens of system calls: not for small inputs.
    if items < 2 * min_part.max(1) {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.min(items / min_part.max(1))
}

/// `work` on `parts` consecutive slices of `items`, each slice but the last on a thread of its
/// own (named `name`) and the last on the caller's; the results in order. `None` when a thread
/// could not start or its work panicked (a panic in the caller's part unwinds as usual). Every
/// thread is joined before this returns.
pub fn in_parts<T: Sync, R: Send>(
    name: &str,
    items: &[T],
    parts: usize,
    work: impl Fn(&[T]) -> R + Sync,
) -> Option<Vec<R>> {
    if items.is_empty() {
        return Some(Vec::new());
    }
    let per_part = items.len().div_ceil(parts.max(1));
    let mut slices = items.chunks(per_part);
    let last = slices.next_back()?;
    let work = &work;
    std::thread::scope(|scope| {
        let threads: Vec<_> = slices
            .map(|slice| {
                std::thread::Builder::new().name(name.into()).spawn_scoped(scope, move || work(slice)).ok()
            })
            .collect();
        let last = work(last);
        // Joined before any result is looked at: no thread outlives the call.
        let mut results: Vec<Option<R>> =
            threads.into_iter().map(|thread| thread.and_then(|thread| thread.join().ok())).collect();
        results.push(Some(last));
        results.into_iter().collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_keep_the_order_of_the_items() {
        let items: Vec<usize> = (0..1000).collect();
        for parts in [1, 2, 3, 7, 1000, 5000] {
            let sums = in_parts("test", &items, parts, |slice| slice.to_vec()).unwrap();
            assert_eq!(sums.concat(), items, "{parts} parts");
            assert!(sums.len() <= parts.max(1));
        }
        assert_eq!(in_parts("test", &[] as &[u8], 3, |s| s.len()), Some(Vec::new()));
    }

    #[test]
    fn a_panicking_part_gives_none() {
        let items: Vec<usize> = (0..10).collect();
        let result = in_parts("test", &items, 2, |slice| assert!(slice[0] != 0, "first part"));
        assert_eq!(result, None);
    }

    #[test]
    fn small_inputs_stay_on_one_thread() {
        assert_eq!(parts_for(0, 256), 1);
        assert_eq!(parts_for(511, 256), 1);
        assert!(parts_for(100_000, 256) >= 1);
        assert!((1..=2).contains(&parts_for(2, 0)));
    }
}
