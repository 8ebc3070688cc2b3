//! Per-level occupancy bitmap: one bit per slot, set while the slot's list
//! is non-empty. It is what lets the wheel jump over empty time: finding the
//! next occupied slot costs `slots / 64` word scans, not one step per tick.
//!
//! **Does not own** the slot lists themselves (see `store.rs`); it only
//! mirrors whether each is empty.

/// A ring of `slots` bits.
#[derive(Debug, Clone)]
pub(crate) struct Occupancy {
    words: Vec<u64>,
    slots: usize,
    /// Number of set bits, so an empty level is skipped without a scan.
    set_count: usize,
}

impl Occupancy {
    pub(crate) fn new(slots: usize) -> Self {
        debug_assert!(slots.is_power_of_two());
        Self {
            words: vec![0; slots.div_ceil(64)],
            slots,
            set_count: 0,
        }
    }

    pub(crate) fn set(&mut self, slot: usize) {
        debug_assert!(slot < self.slots);
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        if self.words[word] & bit == 0 {
            self.words[word] |= bit;
            self.set_count += 1;
        }
    }

    pub(crate) fn clear(&mut self, slot: usize) {
        debug_assert!(slot < self.slots);
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        if self.words[word] & bit != 0 {
            self.words[word] &= !bit;
            self.set_count -= 1;
        }
    }

    #[cfg(test)]
    pub(crate) fn is_set(&self, slot: usize) -> bool {
        self.words[slot / 64] & (1u64 << (slot % 64)) != 0
    }

    /// Distance (in slots, `0..slots`) from `from` to the first set slot at
    /// or after it, going round the ring; `None` if no slot is set.
    pub(crate) fn distance_to_next(&self, from: usize) -> Option<usize> {
        debug_assert!(from < self.slots);
        if self.set_count == 0 {
            return None;
        }
        let first_word = from / 64;
        let high_bits = self.words[first_word] & (u64::MAX << (from % 64));
        let found = if high_bits != 0 {
            first_word * 64 + high_bits.trailing_zeros() as usize
        } else {
            // The rest of the ring, wrapping; ends on `first_word` again,
            // whose low bits (before `from`) are the last to be reached.
            let n = self.words.len();
            let wrapped = (1..=n)
                .map(|step| (first_word + step) % n)
                .find(|&w| self.words[w] != 0);
            let w = wrapped?;
            w * 64 + self.words[w].trailing_zeros() as usize
        };
        debug_assert!(found < self.slots);
        Some((found + self.slots - from) % self.slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_has_no_next() {
        let occ = Occupancy::new(256);
        assert_eq!(occ.distance_to_next(0), None);
        assert_eq!(occ.distance_to_next(255), None);
    }

    #[test]
    fn finds_forward_and_wraps() {
        let mut occ = Occupancy::new(256);
        occ.set(10);
        occ.set(200);
        assert_eq!(occ.distance_to_next(0), Some(10));
        assert_eq!(occ.distance_to_next(10), Some(0));
        assert_eq!(occ.distance_to_next(11), Some(189));
        assert_eq!(occ.distance_to_next(201), Some(65)); // 201 → 255 → 10
        occ.clear(10);
        assert_eq!(occ.distance_to_next(201), Some(255)); // wraps to 200
        assert!(occ.is_set(200) && !occ.is_set(10));
        occ.clear(200);
        assert_eq!(occ.distance_to_next(5), None);
    }

    #[test]
    fn same_word_below_start_is_reached_last() {
        let mut occ = Occupancy::new(256);
        occ.set(64);
        assert_eq!(occ.distance_to_next(70), Some(250));
        occ.set(127);
        assert_eq!(occ.distance_to_next(70), Some(57));
    }

    #[test]
    fn small_rings_use_one_partial_word() {
        let mut occ = Occupancy::new(4);
        occ.set(1);
        assert_eq!(occ.distance_to_next(2), Some(3));
        assert_eq!(occ.distance_to_next(1), Some(0));
        occ.set(1); // idempotent
        occ.clear(1);
        assert_eq!(occ.distance_to_next(0), None);
    }

    #[test]
    fn matches_naive_scan() {
        let mut occ = Occupancy::new(128);
        let set = [3usize, 63, 64, 100, 127];
        for &s in &set {
            occ.set(s);
        }
        for from in 0..128 {
            let naive = (0..128).find(|d| set.contains(&((from + d) % 128)));
            assert_eq!(occ.distance_to_next(from), naive, "from {from}");
        }
    }
}
