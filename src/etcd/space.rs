//! Positions in a key range, for cutting it into pieces of similar size.
//!
//! A key's position is the bytes after the range's common prefix read as a
//! number whose digits are the bytes seen in the range's first keys (and
//! 0 for a byte below them all). Keys like `/0000123` thus count in base
//! 12 (`/`, ten digits and the zero), not 256: pieces of equal width hold
//! similar numbers of keys, where base 256 leaves most of each digit's room
//! empty (`':'` to `0xff`).
//!
//! Positions never go down as keys go up, so a cut at a position's key
//! falls between the right keys: a byte that is no digit counts as the
//! digit below it followed by the highest digits. Keys that agree on every digit the number
//! holds get one position, which is correct, only slower: they are paged
//! within one piece.

/// A range's positions: its common prefix and the digit alphabet.
#[derive(Debug, Clone)]
pub struct Space {
    base: Vec<u8>,
    /// The bytes that are digits 1..=len, ascending; byte 0 is never one.
    alphabet: Vec<u8>,
    radix: u128,
    /// Digits a position holds: as many as fit in a u128.
    digits: u32,
}

impl Space {
    /// The space of `[start, end)`, its digits the bytes of `sample` (keys
    /// of the range) after the common prefix; every byte when none are seen.
    pub fn new<'a>(
        start: &[u8],
        end: Option<&[u8]>,
        sample: impl IntoIterator<Item = &'a [u8]>,
    ) -> Space {
        let base = match end {
            None => Vec::new(),
            Some(end) => {
                let n = start.iter().zip(end).take_while(|(a, b)| a == b).count();
                start[..n].to_vec()
            }
        };
        let mut seen = [false; 256];
        let mut keys = sample.into_iter().peekable();
        if keys.peek().is_none() {
            seen = [true; 256];
        }
        let mut note = |key: &[u8]| {
            for &b in key.get(base.len()..).unwrap_or_default() {
                seen[usize::from(b)] = true;
            }
        };
        keys.for_each(&mut note);
        note(start);
        end.into_iter().for_each(note);
        let alphabet: Vec<u8> = (1..=255u8).filter(|b| seen[usize::from(*b)]).collect();
        let radix = alphabet.len() as u128 + 1;
        let mut digits = 0;
        while radix.checked_pow(digits + 1).is_some() {
            digits += 1;
        }
        Space {
            base,
            alphabet,
            radix,
            digits,
        }
    }

    /// The byte's digit, and whether the byte is not a digit itself (it
    /// then sorts above every key that has its digit there).
    fn digit(&self, b: u8) -> (u128, bool) {
        let d = self.alphabet.partition_point(|a| *a <= b);
        let exact = b == 0 || (d > 0 && self.alphabet[d - 1] == b);
        (d as u128, !exact)
    }

    /// The key's position; keys before the prefix are at 0, keys after it
    /// at `u128::MAX` (beyond every key under it).
    pub fn num(&self, key: &[u8]) -> u128 {
        let Some(rest) = key.strip_prefix(self.base.as_slice()) else {
            return if key < self.base.as_slice() {
                0
            } else {
                u128::MAX
            };
        };
        let (mut n, mut above) = (0u128, false);
        for i in 0..self.digits as usize {
            let d = match rest.get(i) {
                _ if above => self.radix - 1,
                None => 0,
                Some(b) => {
                    let (d, between) = self.digit(*b);
                    above = between;
                    d
                }
            };
            n = n * self.radix + d;
        }
        n
    }

    /// The shortest key at position `n` (its trailing zero digits dropped).
    pub fn key(&self, n: u128) -> Vec<u8> {
        let mut digits = Vec::with_capacity(self.digits as usize);
        let mut rest = n;
        for _ in 0..self.digits {
            digits.push((rest % self.radix) as usize);
            rest /= self.radix;
        }
        let mut key = self.base.clone();
        let used = digits.iter().take_while(|d| **d == 0).count();
        for &d in digits[used..].iter().rev() {
            key.push(match d {
                0 => 0,
                d => self.alphabet[d - 1],
            });
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digits_space() -> Space {
        let sample: Vec<Vec<u8>> = (0..256)
            .map(|i| format!("/bench/src/{i:08}").into_bytes())
            .collect();
        Space::new(
            b"/bench/src/",
            Some(b"/bench/src0"),
            sample.iter().map(|k| k.as_slice()),
        )
    }

    #[test]
    fn decimal_keys_count_in_base_twelve() {
        let space = digits_space();
        assert_eq!(space.base, b"/bench/src");
        // '/', '0'..='9' are the digits.
        assert_eq!(space.radix, 12);
        let a = space.num(b"/bench/src/00000001");
        let b = space.num(b"/bench/src/00000002");
        let c = space.num(b"/bench/src/00000011");
        assert!(a < b && b < c);
        // From ...02 to ...11 is 11 steps of the last digit, not 255.
        assert_eq!(c - b, (b - a) * 11);
        assert!(space.key(b) > b"/bench/src/00000001".to_vec());
        assert_eq!(space.key(space.num(b"/bench/src0")), b"/bench/src0");
        assert_eq!(space.num(b"/a"), 0);
        assert_eq!(space.num(b"/z"), u128::MAX);
    }

    #[test]
    fn no_sample_means_every_byte_is_a_digit() {
        let space = Space::new(b"/p/", Some(b"/p0"), std::iter::empty());
        assert_eq!(space.radix, 256);
        assert_eq!(space.digits, 15);
        let k = b"/p/\x01\xff\x7f".to_vec();
        assert_eq!(space.key(space.num(&k)), k);
    }

    proptest! {
        #[test]
        fn positions_never_go_down_as_keys_go_up(
            sample in proptest::collection::vec("[a-f0-9/]{0,12}", 0..20),
            mut keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 2..40),
        ) {
            let sample: Vec<Vec<u8>> = sample.iter().map(|s| [b"/p/".as_slice(), s.as_bytes()].concat()).collect();
            let space = Space::new(b"/p/", Some(b"/p0"), sample.iter().map(|k| k.as_slice()));
            for k in &mut keys {
                k.splice(0..0, b"/p/".iter().copied());
            }
            keys.sort();
            for pair in keys.windows(2) {
                prop_assert!(space.num(&pair[0]) <= space.num(&pair[1]));
            }
            // A position's key sits at that position and in order.
            let mut ns: Vec<u128> = keys.iter().map(|k| space.num(k)).collect();
            ns.dedup();
            for pair in ns.windows(2) {
                let (a, b) = (space.key(pair[0]), space.key(pair[1]));
                prop_assert!(a < b);
                prop_assert_eq!(space.num(&a), pair[0]);
            }
        }
    }
}
