//! The choice of endpoint: power of two choices on requests in flight.
//!
//! Two endpoints drawn at random, the less loaded one wins. Unlike round robin it steers
//! away from a slow endpoint (its requests pile up); unlike "least loaded of all" it does not
//! send a burst to the one endpoint that happened to be idle, and it costs two reads.

use std::sync::Arc;

use super::endpoint::Endpoint;
use super::random::random_below;

/// The endpoint for the next request: among the healthy ones except `avoid`, or, when none
/// is healthy, among all except `avoid` (an attempt fails fast where waiting would hang).
/// `None` only when `avoid` is the sole endpoint.
pub(super) fn pick(
    endpoints: &[Arc<Endpoint>],
    avoid: Option<&Arc<Endpoint>>,
) -> Option<Arc<Endpoint>> {
    let allowed = |e: &&Arc<Endpoint>| avoid.is_none_or(|a| !Arc::ptr_eq(a, e));
    let healthy = |e: &&Arc<Endpoint>| allowed(e) && e.is_healthy();
    let chosen = match endpoints.iter().filter(healthy).count() {
        0 => two_choices(endpoints.iter().filter(allowed), |e| e.load()),
        n => two_choices_of(endpoints.iter().filter(healthy), n, |e| e.load()),
    };
    chosen.cloned()
}

fn two_choices<'a, T>(
    candidates: impl Iterator<Item = &'a T> + Clone,
    load: impl Fn(&T) -> usize,
) -> Option<&'a T> {
    let n = candidates.clone().count();
    two_choices_of(candidates, n, load)
}

/// Of `n` candidates, the less loaded of two distinct ones drawn at random.
fn two_choices_of<'a, T>(
    candidates: impl Iterator<Item = &'a T> + Clone,
    n: usize,
    load: impl Fn(&T) -> usize,
) -> Option<&'a T> {
    if n < 2 {
        return candidates.clone().next();
    }
    let first = random_below(n);
    let mut second = random_below(n - 1);
    if second >= first {
        second += 1;
    }
    let a = candidates.clone().nth(first)?;
    let b = candidates.clone().nth(second)?;
    Some(if load(b) < load(a) { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_less_loaded_of_two_wins() {
        let loads = [7usize, 3];
        for _ in 0..100 {
            assert_eq!(two_choices(loads.iter(), |l| *l), Some(&3));
        }
    }

    #[test]
    fn the_most_loaded_of_many_is_never_chosen_and_the_rest_are() {
        let loads = [5usize, 0, 0, 0];
        let mut seen = [0; 4];
        for _ in 0..2000 {
            let chosen = two_choices(loads.iter(), |l| *l).unwrap();
            let index = loads.iter().position(|l| std::ptr::eq(l, chosen)).unwrap();
            seen[index] += 1;
        }
        assert_eq!(seen[0], 0, "{seen:?}");
        assert!(seen[1..].iter().all(|&n| n > 400), "{seen:?}");
    }

    #[test]
    fn one_or_no_candidate() {
        let one = [9usize];
        assert_eq!(two_choices(one.iter(), |l| *l), Some(&9));
        let none: [usize; 0] = [];
        assert_eq!(two_choices(none.iter(), |l| *l), None);
    }

    #[test]
    fn random_numbers_stay_in_range_and_spread() {
        let mut seen = [0; 3];
        for _ in 0..3000 {
            seen[random_below(3)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}
