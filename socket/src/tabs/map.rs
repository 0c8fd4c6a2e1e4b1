//! [`TabMap`]: a small map keyed by [`TabId`], what the coordinator keeps
//! per tab (the roster, the replica's `accepted`).
//!
//! A map of a handful of tabs, ordered by id as a `BTreeMap` would be (so
//! the wire lists `accepted` in the same order), kept as two sorted
//! vectors. Each `BTreeMap` instantiation cost about 4 KB of wasm (its
//! node splitting, merging and stealing); the lookup here is one
//! non-generic binary search over the ids.

use std::fmt;

use super::TabId;

/// Per-tab values, ordered by tab id, in two sorted vectors: each
/// `BTreeMap` instantiation cost about 4 KB of wasm.
#[derive(Clone, PartialEq, Eq)]
pub struct TabMap<V> {
    /// Sorted, no duplicates.
    keys: Vec<TabId>,
    /// `values[i]` is `keys[i]`'s.
    values: Vec<V>,
}

/// Where `tab` is in `keys`, or where it would go.
fn position(keys: &[TabId], tab: &TabId) -> Result<usize, usize> {
    keys.binary_search(tab)
}

impl<V> TabMap<V> {
    /// An empty map.
    pub const fn new() -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Sets `tab`'s value; the previous one, if any.
    pub fn insert(&mut self, tab: TabId, value: V) -> Option<V> {
        match position(&self.keys, &tab) {
            Ok(at) => Some(std::mem::replace(&mut self.values[at], value)),
            Err(at) => {
                self.keys.insert(at, tab);
                self.values.insert(at, value);
                None
            }
        }
    }

    /// Sets `tab`'s value unless it has one.
    pub fn insert_if_absent(&mut self, tab: TabId, value: V) {
        if let Err(at) = position(&self.keys, &tab) {
            self.keys.insert(at, tab);
            self.values.insert(at, value);
        }
    }

    /// `tab`'s value.
    pub fn get(&self, tab: &TabId) -> Option<&V> {
        position(&self.keys, tab).ok().map(|at| &self.values[at])
    }

    /// `tab`'s value, to change.
    pub fn get_mut(&mut self, tab: &TabId) -> Option<&mut V> {
        position(&self.keys, tab)
            .ok()
            .map(|at| &mut self.values[at])
    }

    /// Removes `tab`; its value, if it had one.
    pub fn remove(&mut self, tab: &TabId) -> Option<V> {
        let at = position(&self.keys, tab).ok()?;
        self.keys.remove(at);
        Some(self.values.remove(at))
    }

    /// Whether `tab` has a value.
    pub fn contains_key(&self, tab: &TabId) -> bool {
        position(&self.keys, tab).is_ok()
    }

    /// The tabs, in order.
    pub fn keys(&self) -> std::slice::Iter<'_, TabId> {
        self.keys.iter()
    }

    /// The values, in the tabs' order.
    pub fn values(&self) -> std::slice::Iter<'_, V> {
        self.values.iter()
    }

    /// `(tab, value)` pairs, in the tabs' order.
    pub fn iter(&self) -> impl Iterator<Item = (&TabId, &V)> {
        self.keys.iter().zip(&self.values)
    }

    /// How many tabs have a value.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no tab has a value.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl<V> Default for TabMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: fmt::Debug> fmt::Debug for TabMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A later pair of the same tab wins, as with a `BTreeMap`.
impl<V> FromIterator<(TabId, V)> for TabMap<V> {
    fn from_iter<I: IntoIterator<Item = (TabId, V)>>(pairs: I) -> Self {
        let mut map = Self::new();
        for (tab, value) in pairs {
            map.insert(tab, value);
        }
        map
    }
}

impl<V, const N: usize> From<[(TabId, V); N]> for TabMap<V> {
    fn from(pairs: [(TabId, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_keeps_tabs_in_order_and_a_later_value_wins() {
        let mut map: TabMap<u64> = [(TabId(7), 1), (TabId(3), 2), (TabId(7), 3)].into();
        assert_eq!(map.len(), 2);
        assert_eq!(
            map.iter().collect::<Vec<_>>(),
            [(&TabId(3), &2), (&TabId(7), &3)]
        );
        assert_eq!(map.insert(TabId(5), 4), None);
        assert_eq!(map.insert(TabId(5), 6), Some(4));
        map.insert_if_absent(TabId(5), 9);
        map.insert_if_absent(TabId(1), 8);
        assert_eq!(
            map.keys().copied().collect::<Vec<_>>(),
            [1, 3, 5, 7].map(TabId)
        );
        assert_eq!(map.values().copied().collect::<Vec<_>>(), [8, 2, 6, 3]);
        *map.get_mut(&TabId(3)).unwrap() = 10;
        assert_eq!(map.get(&TabId(3)), Some(&10));
        assert_eq!(map.remove(&TabId(3)), Some(10));
        assert_eq!(map.remove(&TabId(3)), None);
        assert!(!map.contains_key(&TabId(3)) && map.contains_key(&TabId(1)));
        assert_eq!(
            format!("{map:?}"),
            "{TabId(1): 8, TabId(5): 6, TabId(7): 3}"
        );
        assert!(TabMap::<u64>::default().is_empty());
    }
}
