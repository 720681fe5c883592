//! One compiled sort for the whole agent.
//!
//! The standard library's sorts are compiled anew for every element type
//! and comparator, about 4 KB of machine code each (driftsort, or ipnsort
//! for the unstable ones), and collecting into a `BTreeMap` or `BTreeSet`
//! adds another (it sorts, then builds): [`map`] and [`set`] insert instead. The agent sorts two dozen kinds
//! of small lists (peers, suspects, points, names, config problems), so
//! those copies came to about a tenth of its code: over the 1.5 MiB budget
//! of the aarch64 binary (issue 19). Here one heapsort, compiled once,
//! reaches the elements through a small closure per caller.
//!
//! Heapsort is `O(n log n)` in every case and needs no buffer. It is not
//! stable: callers whose elements may compare equal while differing
//! break the tie in their comparator.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// `items` as a map, inserted one by one: what `collect` gives (the last
/// value of a repeated key wins), without the sort `collect` compiles for
/// each key and value type.
pub fn map<K: Ord, V>(items: impl IntoIterator<Item = (K, V)>) -> BTreeMap<K, V> {
    let mut map = BTreeMap::new();
    map.extend(items);
    map
}

/// `items` as a set, inserted one by one (see [`map`]).
pub fn set<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeSet<T> {
    let mut set = BTreeSet::new();
    set.extend(items);
    set
}

/// Sorts `items` by `compare` (not stable).
pub fn sort_by<T>(items: &mut [T], mut compare: impl FnMut(&T, &T) -> Ordering) {
    let len = items.len();
    heapsort(len, &mut |step| match step {
        Step::Less(a, b) => compare(&items[a], &items[b]) == Ordering::Less,
        Step::Swap(a, b) => {
            items.swap(a, b);
            false
        }
    });
}

/// Sorts `items` by the key `key` gives (not stable).
pub fn sort_by_key<T, K: Ord>(items: &mut [T], mut key: impl FnMut(&T) -> K) {
    sort_by(items, |a, b| key(a).cmp(&key(b)));
}

/// Sorts `items` in their order (not stable: equal elements are equal).
pub fn sort<T: Ord>(items: &mut [T]) {
    sort_by(items, T::cmp);
}

/// What the sort asks of the caller's closure.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Whether element `a` sorts before element `b`.
    Less(usize, usize),
    /// Swap two elements (the answer is ignored).
    Swap(usize, usize),
}

/// The one compiled sort: a max-heap of the first `end` elements, whose
/// root is swapped to the end until none are left.
#[inline(never)]
fn heapsort(len: usize, step: &mut dyn FnMut(Step) -> bool) {
    for root in (0..len / 2).rev() {
        sift_down(root, len, step);
    }
    for end in (1..len).rev() {
        step(Step::Swap(0, end));
        sift_down(0, end, step);
    }
}

/// Moves element `root` down the heap of the first `end` elements.
fn sift_down(mut root: usize, end: usize, step: &mut dyn FnMut(Step) -> bool) {
    loop {
        let mut child = 2 * root + 1;
        if child >= end {
            return;
        }
        if child + 1 < end && step(Step::Less(child, child + 1)) {
            child += 1;
        }
        if !step(Step::Less(root, child)) {
            return;
        }
        step(Step::Swap(root, child));
        root = child;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sorts_like_the_standard_library(mut items in proptest::collection::vec(any::<i16>(), 0..200)) {
            let mut expected = items.clone();
            expected.sort();
            sort(&mut items);
            prop_assert_eq!(items, expected);
        }

        #[test]
        fn sorts_by_a_key_and_keeps_every_element(items in proptest::collection::vec((0u8..8, any::<u32>()), 0..100)) {
            let mut sorted = items.clone();
            sort_by_key(&mut sorted, |&(key, _)| key);
            prop_assert!(sorted.windows(2).all(|w| w[0].0 <= w[1].0));
            let (mut a, mut b) = (items, sorted.clone());
            a.sort();
            b.sort();
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn a_map_keeps_the_last_value_of_a_repeated_key_as_collect_does() {
        let items = [(2, 'a'), (1, 'b'), (2, 'c')];
        let collected: BTreeMap<_, _> = items.into_iter().collect();
        assert_eq!(map(items), collected);
        assert_eq!(set([3, 1, 3]), BTreeSet::from([1, 3]));
    }

    #[test]
    fn a_reversed_comparator_sorts_descending() {
        let mut items = vec![3, 1, 4, 1, 5, 9, 2, 6];
        sort_by(&mut items, |a, b| b.cmp(a));
        assert_eq!(items, [9, 6, 5, 4, 3, 2, 1, 1]);
    }
}
