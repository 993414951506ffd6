//! Field readers shared by every text input: [`parse_f64`], the one reader of numbers;
//! [`parse_f32`], the same value rounded to the `f32` the models read, by a fast path for
//! plain numbers; and [`parse_date`] for `YYYY-MM-DD`.

use chrono::NaiveDate;

/// Parses a numeric field: decimal or scientific notation, `nan`/`NaN`/`NAN` or an empty
/// field as NaN. Infinities are refused (no sensor reports them), and so is a finite
/// number too large for the 32-bit floats the models read (`1e39`; see [`check_range`]).
/// Every text input of the project (files, HTTP bodies) reads numbers through this one
/// function.
pub fn parse_f64(field: &[u8]) -> std::result::Result<f64, String> {
    // The common case first: a plain number with no spaces around it.
    if let (Some(a), Some(z)) = (field.first(), field.last())
        && (a.is_ascii_digit() || *a == b'-' || *a == b'.')
        && z.is_ascii_digit()
        && let Ok(t) = std::str::from_utf8(field)
        && let Ok(v) = t.parse::<f64>()
    {
        return check_range(v).map_err(|reason| format!("'{t}' {reason}"));
    }
    let s = std::str::from_utf8(field).map_err(|_| "not valid UTF-8".to_owned())?;
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("nan") {
        return Ok(f64::NAN);
    }
    match t.parse::<f64>() {
        Ok(v) => check_range(v).map_err(|reason| format!("'{t}' {reason}")),
        Err(_) => Err(format!("'{t}' is not a number")),
    }
}

/// The one rule for numbers of every reader (text, JSON, Parquet; SPEC §4): NaN is a
/// missing value; otherwise a value must be finite and round to a finite `f32`, the type
/// models read — `1e39` would reach a model as an infinity while `inf` is refused. `Err`
/// is the reason, to follow the value in a message.
#[inline]
pub fn check_range(v: f64) -> std::result::Result<f64, &'static str> {
    if v.is_nan() || (v as f32).is_finite() {
        Ok(v)
    } else if v.is_infinite() {
        Err("is not a finite number")
    } else {
        Err("is beyond the range of the 32-bit floats models read (±3.4028235e38)")
    }
}

/// Parses a numeric field as the `f32` a model reads: always exactly
/// `parse_f64(field).map(|v| v as f32)` — the decimal rounded to `f64`, then to `f32` —
/// with the same errors. Plain numbers (`-12.5`, `3.70`, `1.234567890123456789e+00`) take a
/// fast path that skips most of `f64` parsing; see `fast_f32`.
#[inline]
pub fn parse_f32(field: &[u8]) -> std::result::Result<f32, String> {
    match fast_f32(field) {
        Some(v) => Ok(v),
        None => parse_f64(field).map(|v| v as f32),
    }
}

/// Parses a `YYYY-MM-DD` date field (spaces around allowed): exactly four digits of year,
/// two of month and two of day, a date of the calendar (2024-02-30 is not). Anything else
/// is refused, the error naming the text: chrono's `%Y-%m-%d` also takes `19-10-20` (the year 19) and
/// `2024-1-5`, which SPEC §4 does not allow.
pub fn parse_date(field: &[u8]) -> std::result::Result<NaiveDate, String> {
    let trimmed = field.trim_ascii();
    if let &[y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = trimmed
        && [y0, y1, y2, y3, m0, m1, d0, d1]
            .iter()
            .all(u8::is_ascii_digit)
    {
        let n = |a: &[u8]| a.iter().fold(0u32, |v, &c| v * 10 + u32::from(c - b'0'));
        // The year has four digits, so it fits an i32.
        let year = n(&[y0, y1, y2, y3]) as i32;
        if let Some(d) = NaiveDate::from_ymd_opt(year, n(&[m0, m1]), n(&[d0, d1])) {
            return Ok(d);
        }
    }
    Err(format!(
        "'{}' is not a YYYY-MM-DD date",
        String::from_utf8_lossy(trimmed)
    ))
}

/// Powers of ten 10⁰…10⁴⁴ and 10⁰…10⁻⁴⁴ in `f64`, each the correctly rounded value of its
/// literal (exact up to 10²²).
const POW10: [f64; 45] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28, 1e29, 1e30, 1e31, 1e32,
    1e33, 1e34, 1e35, 1e36, 1e37, 1e38, 1e39, 1e40, 1e41, 1e42, 1e43, 1e44,
];
const NEG_POW10: [f64; 45] = [
    1e-0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12, 1e-13, 1e-14,
    1e-15, 1e-16, 1e-17, 1e-18, 1e-19, 1e-20, 1e-21, 1e-22, 1e-23, 1e-24, 1e-25, 1e-26, 1e-27,
    1e-28, 1e-29, 1e-30, 1e-31, 1e-32, 1e-33, 1e-34, 1e-35, 1e-36, 1e-37, 1e-38, 1e-39, 1e-40,
    1e-41, 1e-42, 1e-43, 1e-44,
];

/// Half the distance, in units of the `f64`'s last place, within which the fast path gives
/// up near an `f32` rounding midpoint. The approximation below is within 3 units of the
/// decimal's exact value and the correctly rounded `f64` within half a unit of it.
const MIDPOINT_MARGIN: u64 = 16;

/// `[-]digits[.digits][(e|E)[+|-]digits]` with at most ~19 significant digits, an exponent
/// within ±44 after moving the point, and a result in the normal `f32` range; `None` for
/// anything else (then [`parse_f64`] decides).
///
/// The value is approximated in `f64` as `m × 10^e` with three roundings (`m` to `f64`,
/// the power of ten, the product; a multiplication rather than a division by an exact
/// power, which was the slowest instruction of the whole parse), so within 3 ulp of the
/// decimal. The correctly rounded `f64` is within ½ ulp of the decimal, hence within 3.5
/// ulp of the approximation. Rounding either to `f32` gives the same result unless an
/// `f32` midpoint (the low 29 bits of the `f64` mantissa equal to 2²⁸) lies between them,
/// which is excluded by refusing approximations within [`MIDPOINT_MARGIN`] ulp of one.
#[inline]
fn fast_f32(s: &[u8]) -> Option<f32> {
    let (neg, mut i) = match s.first()? {
        b'-' => (true, 1),
        _ => (false, 0),
    };
    let mut m: u64 = 0;
    let int_start = i;
    i = digits(s, i, &mut m)?;
    let mut any = i > int_start;
    let mut exp: i32 = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        i = digits(s, i, &mut m)?;
        any |= i > frac_start;
        exp = -((i - frac_start) as i32);
    }
    if !any {
        return None;
    }
    if let Some(&c) = s.get(i)
        && c | 0x20 == b'e'
    {
        i += 1;
        let eneg = match s.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let e_start = i;
        let mut e: i32 = 0;
        while let Some(&c) = s.get(i)
            && c.is_ascii_digit()
            && i - e_start < 4
        {
            e = e * 10 + i32::from(c - b'0');
            i += 1;
        }
        if i == e_start {
            return None;
        }
        exp += if eneg { -e } else { e };
    }
    if i != s.len() {
        return None;
    }
    if m == 0 {
        return Some(if neg { -0.0 } else { 0.0 });
    }
    let mf = m as f64;
    let x = match exp {
        0..=44 => mf * POW10[exp as usize],
        -44..=-1 => mf * NEG_POW10[(-exp) as usize],
        _ => return None,
    };
    if !(f64::from(f32::MIN_POSITIVE)..=f64::from(f32::MAX)).contains(&x) {
        return None;
    }
    let low = x.to_bits() & ((1 << 29) - 1);
    if low.abs_diff(1 << 28) <= MIDPOINT_MARGIN {
        return None;
    }
    let v = x as f32;
    Some(if neg { -v } else { v })
}

/// Accumulates the decimal digits of `s` from `i` into `m` (eight at a time where it can);
/// returns the index after them, or `None` if `m` would no longer be exact.
#[inline]
fn digits(s: &[u8], mut i: usize, m: &mut u64) -> Option<usize> {
    while let Some(chunk) = s.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().ok()?);
        if !all_digits(w) {
            break;
        }
        if *m > (u64::MAX - 99_999_999) / 100_000_000 {
            return None;
        }
        *m = *m * 100_000_000 + eight_digits(w);
        i += 8;
    }
    while let Some(&c) = s.get(i)
        && c.is_ascii_digit()
    {
        if *m > (u64::MAX - 9) / 10 {
            return None;
        }
        *m = *m * 10 + u64::from(c - b'0');
        i += 1;
    }
    Some(i)
}

/// Whether all eight bytes of `w` are ASCII digits.
#[inline]
fn all_digits(w: u64) -> bool {
    let a = w.wrapping_add(0x4646_4646_4646_4646);
    let b = w.wrapping_sub(0x3030_3030_3030_3030);
    (a | b) & 0x8080_8080_8080_8080 == 0
}

/// The value of eight ASCII digits, the first in the lowest byte.
#[inline]
fn eight_digits(w: u64) -> u64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 0x000F_4240_0000_0064; // 100 + (1000000 << 32)
    const MUL2: u64 = 0x0000_2710_0000_0001; // 1 + (10000 << 32)
    let w = w.wrapping_sub(0x3030_3030_3030_3030);
    let w = w.wrapping_mul(10).wrapping_add(w >> 8);
    let a = (w & MASK).wrapping_mul(MUL1);
    let b = ((w >> 16) & MASK).wrapping_mul(MUL2);
    (a.wrapping_add(b) >> 32) & 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The contract: bit for bit what `parse_f64` then `as f32` gives, errors included.
    fn check(s: &str) {
        let want = parse_f64(s.as_bytes()).map(|v| v as f32);
        let got = parse_f32(s.as_bytes());
        match (&want, &got) {
            (Ok(w), Ok(g)) => assert!(
                w.to_bits() == g.to_bits() || (w.is_nan() && g.is_nan()),
                "{s:?}: parse_f32 {g:e} ({:#x}), parse_f64 as f32 {w:e} ({:#x})",
                g.to_bits(),
                w.to_bits()
            ),
            _ => assert_eq!(got, want, "{s:?}"),
        }
    }

    #[test]
    fn dates_are_four_two_two_digits_of_the_calendar() {
        // chrono's `%Y-%m-%d` on the strict shape, a refusal for any other shape.
        let strict = |s: &str| {
            let t = s.trim();
            let shape = t.len() == 10
                && t.bytes().enumerate().all(|(i, b)| match i {
                    4 | 7 => b == b'-',
                    _ => b.is_ascii_digit(),
                });
            if !shape {
                return Err(format!("'{t}' is not a YYYY-MM-DD date"));
            }
            NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .map_err(|_| format!("'{t}' is not a YYYY-MM-DD date"))
        };
        for s in [
            "2024-02-29",
            "2023-02-29",
            "2024-02-30",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "0000-01-01",
            "9999-12-31",
            "2024-1-05",
            "2024-1-5",
            "19-10-20",
            " 2024-01-05 ",
            "2024/01/05",
            "20240105",
            "",
            "x",
            "+2024-01-05",
            "2024-01-05T",
            "12024-01-05",
            "２024-01-05",
        ] {
            assert_eq!(parse_date(s.as_bytes()), strict(s), "{s:?}");
        }
        for refused in ["2024-1-5", "19-10-20", "2024-02-30", "+2024-01-05"] {
            assert!(parse_date(refused.as_bytes()).is_err(), "{refused}");
        }
        let e = parse_date(b"2024-02-30").unwrap_err();
        assert_eq!(e, "'2024-02-30' is not a YYYY-MM-DD date");
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20_000 {
            let s: String = (0..10)
                .map(|i| match (i, rng.random_range(0..12)) {
                    (4 | 7, 0..=10) => '-',
                    (_, 11) => '-',
                    _ => char::from(b'0' + rng.random_range(0..10u8)),
                })
                .collect();
            assert_eq!(parse_date(s.as_bytes()), strict(&s), "{s:?}");
        }
    }

    #[test]
    fn eight_digits_and_digit_test() {
        let w = u64::from_le_bytes(*b"12345678");
        assert!(all_digits(w));
        assert_eq!(eight_digits(w), 12_345_678);
        assert_eq!(eight_digits(u64::from_le_bytes(*b"00000009")), 9);
        for bad in [
            *b"1234567.",
            *b"/2345678",
            *b"1234:678",
            *b"12345e78",
            *b"\x8012345 7",
        ] {
            assert!(!all_digits(u64::from_le_bytes(bad)), "{bad:?}");
        }
    }

    #[test]
    fn plain_numbers_take_the_fast_path() {
        for s in [
            "3.7",
            "-12.5",
            "0",
            "400",
            "1.234567890123456789e+00",
            "-9.5e-7",
            "2.5E3",
        ] {
            assert!(fast_f32(s.as_bytes()).is_some(), "{s}");
        }
        // Exactly halfway between two f32s (2^24 + 1 between 2^24 and 2^24 + 2): left to
        // parse_f64, which rounds to even.
        for s in ["16777217", "1.6777217e7", "-16777219"] {
            assert_eq!(fast_f32(s.as_bytes()), None, "{s}");
            check(s);
        }
        assert_eq!(parse_f32(b"16777217"), Ok(16_777_216.0));
        assert_eq!(parse_f32(b"16777219"), Ok(16_777_220.0));
        for s in ["nan", "", " 1", "+1", "1e45", "1e-46", "1e39"] {
            assert_eq!(fast_f32(s.as_bytes()), None, "{s}");
        }
    }

    #[test]
    fn edge_cases_agree() {
        for s in [
            "0",
            "-0",
            "-0.0",
            "0.000",
            "1",
            "1.",
            ".5",
            "-.5",
            "1.e5",
            "1e",
            "e5",
            "-",
            ".",
            "-.",
            "1e+",
            "1e-",
            "1e+5",
            "1E5",
            "1e-5",
            "1e0005",
            "1e00005",
            "1.5e99999",
            "",
            "nan",
            "NaN",
            " 1.5 ",
            "+1",
            "1_0",
            "1,5",
            "1.2.3",
            "--1",
            "1e5.5",
            "0x10",
            "00000000000000000000001",
            "99999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "1844674407370955161.5",
            "1e-45",
            "1e-40",
            "1.17549435e-38",
            "1.1754942e-38",
            "3.4028235e38",
            "3.40282357e38",
            "3.4028236e38",
            "1e39",
            "1e308",
            "1e309",
            "inf",
            "-infinity",
            "3.7",
            "-12.5",
            "4.125000000000000000e+00",
            "1.234567890123456789e+00",
            "9.999999999999999999e+22",
            "1e44",
            "1e45",
            "1e-44",
            "1.0e-45",
            "\u{661}",
            "1\u{661}",
        ] {
            check(s);
        }
    }

    #[test]
    fn values_beyond_f32_are_refused_like_infinities() {
        // Rounds to f32::MAX: taken; rounds to an infinity: refused, whatever the spelling.
        assert_eq!(parse_f32(b"3.4028235e38"), Ok(f32::MAX));
        assert_eq!(parse_f32(b"-3.40282356e38"), Ok(-f32::MAX));
        for s in ["1e39", "-1e39", "1e308", " 1e39 ", "inf", "-Infinity"] {
            let e = parse_f64(s.as_bytes()).expect_err(s);
            assert!(e.contains(s.trim()), "{s}: {e}");
            assert!(parse_f32(s.as_bytes()).is_err(), "{s}");
        }
        assert!(parse_f64(b"1e39").unwrap_err().contains("32-bit"));
        assert!(parse_f64(b"3.40282356e38").is_ok(), "rounds to f32::MAX");
        assert!(parse_f64(b"3.4028236e38").is_err(), "rounds to an infinity");
        assert!(check_range(f64::NAN).unwrap().is_nan());
        assert!(check_range(f64::INFINITY).is_err());
        assert!(check_range(-1e39).is_err());
    }

    #[test]
    fn random_numbers_agree() {
        random_numbers(7, 60_000);
    }

    /// The same with 50 million cases: `cargo test --release -p bms-core -- --ignored`
    /// (about a minute).
    #[test]
    #[ignore]
    fn many_random_numbers_agree() {
        random_numbers(8, 10_000_000);
    }

    fn random_numbers(seed: u64, n: usize) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..n {
            // Any finite f32, written the ways our inputs write numbers.
            let v = f32::from_bits(rng.random::<u32>());
            if !v.is_finite() {
                continue;
            }
            let d = f64::from(v);
            check(&format!("{d:.18e}"));
            check(&format!("{v}"));
            check(&format!("{v:e}"));
            check(&format!("{:.6}", rng.random_range(-1e4..1e4f64)));
            // Random digit strings with a point and an exponent anywhere.
            let n = rng.random_range(1..22);
            let mut s: String = (0..n)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect();
            if rng.random_bool(0.7) {
                s.insert(rng.random_range(0..=n), '.');
            }
            if rng.random_bool(0.5) {
                s.push_str(&format!("e{}", rng.random_range(-60..60)));
            }
            if rng.random_bool(0.3) {
                s.insert(0, '-');
            }
            check(&s);
        }
    }

    #[test]
    fn near_f32_midpoints_agree() {
        // Decimals at, just above and just below the point halfway between two f32s:
        // where rounding to f64 first and then to f32 is decided by the last digits.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for _ in 0..40_000 {
            let a = f32::from_bits(rng.random_range(0x0080_0000..0x7f7f_ffffu32));
            let b = f32::from_bits(a.to_bits() + 1);
            let mid = (f64::from(a) + f64::from(b)) / 2.0; // exact
            let mut near = mid;
            for _ in 0..rng.random_range(0..24) {
                near = if rng.random_bool(0.5) {
                    near.next_up()
                } else {
                    near.next_down()
                };
            }
            for x in [mid, near] {
                check(&format!("{x:.25e}"));
                check(&format!("{x:.18e}"));
                check(&format!("{x:.16e}"));
                check(&format!("{x:e}"));
            }
        }
    }
}
