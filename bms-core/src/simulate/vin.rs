//! Synthetic VINs: 17 characters from the ISO 3779 alphabet (no I, O or Q), with a valid
//! North-American check digit in position 9 and the vehicle index in the serial part, so
//! the VINs of one fleet are distinct.

use rand::Rng;

/// The 33 characters a VIN may contain.
const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPRSTUVWXYZ";
/// World manufacturer identifiers of Chinese makers (VINs of China start with `L`).
const WMIS: [&[u8; 3]; 6] = [b"LGX", b"LSV", b"LFV", b"LRW", b"LNB", b"LB3"];
/// Letters used for the plant code, which also carries the index above 999,999.
const PLANTS: &[u8] = b"ABCDEFGHJKLMNPRSTUVWXYZ";
/// The largest fleet whose VINs stay distinct.
pub const MAX_VEHICLES: usize = PLANTS.len() * 1_000_000;

fn transliterate(c: u8) -> u32 {
    match c {
        b'0'..=b'9' => (c - b'0') as u32,
        b'A'..=b'H' => (c - b'A') as u32 + 1,
        b'J'..=b'N' => (c - b'J') as u32 + 1,
        b'P' => 7,
        b'R' => 9,
        b'S'..=b'Z' => (c - b'S') as u32 + 2,
        _ => 0,
    }
}

const WEIGHTS: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];

/// The check digit (position 9) of a 17-character VIN.
pub fn check_digit(vin: &[u8; 17]) -> u8 {
    let sum: u32 = vin
        .iter()
        .zip(WEIGHTS)
        .map(|(&c, w)| transliterate(c) * w)
        .sum();
    match sum % 11 {
        10 => b'X',
        d => b'0' + d as u8,
    }
}

/// The VIN of vehicle `index` (must be below [`MAX_VEHICLES`]), drawn from `rng`.
pub fn make_vin<R: Rng>(rng: &mut R, index: usize) -> String {
    let mut v = [b'0'; 17];
    v[..3].copy_from_slice(WMIS[rng.random_range(0..WMIS.len())]);
    for c in &mut v[3..8] {
        *c = ALPHABET[rng.random_range(10..ALPHABET.len())];
    }
    v[9] = b"RSTVWXY123456789"[rng.random_range(0..16)];
    v[10] = PLANTS[(index / 1_000_000) % PLANTS.len()];
    let serial = format!("{:06}", index % 1_000_000);
    v[11..].copy_from_slice(serial.as_bytes());
    v[8] = check_digit(&v);
    String::from_utf8(v.to_vec()).expect("ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn known_check_digit() {
        // The textbook example VIN 1M8GDM9AXKP042788 has check digit X.
        assert_eq!(check_digit(b"1M8GDM9AXKP042788"), b'X');
    }

    #[test]
    fn vins_are_valid_and_distinct() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut seen = std::collections::HashSet::new();
        for i in (0..2000).chain([999_999, 1_000_000, MAX_VEHICLES - 1]) {
            let vin = make_vin(&mut rng, i);
            let b: &[u8; 17] = vin.as_bytes().try_into().unwrap();
            assert!(b.iter().all(|c| ALPHABET.contains(c)), "{vin}");
            assert!(!vin.contains(['I', 'O', 'Q']), "{vin}");
            assert_eq!(b[8], check_digit(b), "{vin}");
            assert!(seen.insert(vin));
        }
    }
}
