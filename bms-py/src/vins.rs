//! VIN columns as vehicle codes without a Python object per row: strings held by Arrow
//! (pandas' `str` dtype, `string[pyarrow]`, pyarrow tables) are numbered from their offset
//! and byte buffers, categoricals from their codes. Codes number VINs in order of first
//! appearance, as `pandas.factorize(sort=False)` does.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::mem::MaybeUninit;

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use rayon::prelude::*;

use crate::arrays::{array1, slice1};
use crate::errors::invalid;

/// FxHash (rustc's): a multiply–rotate per 8 bytes, plenty for VINs and much cheaper than
/// SipHash, which only pays off against adversarial keys.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Arrow offsets: int32 (`string`) or int64 (`large_string`).
trait Offset: Copy + Send + Sync {
    fn get(self) -> i64;
}

impl Offset for i32 {
    #[inline]
    fn get(self) -> i64 {
        i64::from(self)
    }
}

impl Offset for i64 {
    #[inline]
    fn get(self) -> i64 {
        self
    }
}

/// Numbers byte strings by first appearance.
#[derive(Default)]
struct Factorizer<'a> {
    map: HashMap<&'a [u8], u32, BuildHasherDefault<FxHasher>>,
    uniques: Vec<&'a [u8]>,
}

impl<'a> Factorizer<'a> {
    /// The code of `s`, a new one if it is new.
    #[inline]
    fn code(&mut self, s: &'a [u8]) -> u32 {
        let next = self.uniques.len() as u32;
        let c = *self.map.entry(s).or_insert(next);
        if c == next {
            self.uniques.push(s);
        }
        c
    }

    /// Numbers the rows of one chunk (`offsets` checked: non-negative, non-decreasing,
    /// within `data`) as runs of equal strings, `(code, rows)`, appended to `runs`.
    ///
    /// Daily tables are usually grouped by vehicle, so after a lookup the rows that follow
    /// are checked to repeat the string [`BLOCK`] rows at a time: rows `i..end` all repeat
    /// row `i − 1` when they all have its length and their bytes equal the same stretch of
    /// `data` shifted back by one row (one `memcmp` for the block). A block that does not
    /// is walked row by row up to the first different row, which is looked up.
    fn chunk<O: Offset>(&mut self, offsets: &[O], data: &'a [u8], runs: &mut Runs) {
        let at = |k: usize| offsets[k].get() as usize;
        let n = offsets.len() - 1;
        let mut i = 0;
        while i < n {
            let s = &data[at(i)..at(i + 1)];
            let c = self.code(s);
            let run = i;
            i += 1;
            let len = s.len() as i64;
            while i < n {
                let end = (i + BLOCK).min(n);
                let lengths = offsets[i..=end]
                    .windows(2)
                    .fold(true, |ok, w| ok & (w[1].get() - w[0].get() == len));
                let (a, b) = (at(i), at(end));
                if lengths && data[a..b] == data[a - s.len()..b - s.len()] {
                    i = end;
                    continue;
                }
                while i < end && same(&data[at(i)..at(i + 1)], s) {
                    i += 1;
                }
                if i < end {
                    break;
                }
            }
            // At most u32::MAX rows in all (checked in `ArrowStrings::new`).
            runs.push((c, (i - run) as u32));
        }
    }
}

/// Runs of equal strings of a segment: (code, rows).
type Runs = Vec<(u32, u32)>;

/// Rows compared at once when following a run of equal strings.
const BLOCK: usize = 32;

/// `a == b`, inline: for VIN-sized strings a call to `memcmp` per row costs more than the
/// comparison.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut wa, mut wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let words = (&mut wa).zip(&mut wb).all(|(x, y)| {
        u64::from_ne_bytes(x.try_into().expect("8 bytes"))
            == u64::from_ne_bytes(y.try_into().expect("8 bytes"))
    });
    words
        && wa
            .remainder()
            .iter()
            .zip(wb.remainder())
            .all(|(x, y)| x == y)
}

enum Offsets<'py> {
    I32(PyReadonlyArray1<'py, i32>),
    I64(PyReadonlyArray1<'py, i64>),
}

fn offsets<'py>(obj: &Bound<'py, PyAny>, i: usize) -> PyResult<Offsets<'py>> {
    let what = format!("VIN chunk {}: offsets", i + 1);
    match array1::<i64>(obj, &what, None) {
        Ok(a) => Ok(Offsets::I64(a)),
        Err(_) => array1::<i32>(obj, &what, None)
            .map(Offsets::I32)
            .map_err(|_| invalid(format!("{what}: expected a 1-D int32 or int64 array"))),
    }
}

/// The ends of a chunk's offsets (that they never decrease is checked while numbering, in
/// parallel: see [`increasing`]).
fn checked<O: Offset>(o: &[O], data_len: usize, i: usize) -> PyResult<()> {
    let bad = o.is_empty() || o[0].get() < 0 || o[o.len() - 1].get() as u64 > data_len as u64;
    if bad {
        return Err(invalid(bad_offsets(i, data_len)));
    }
    Ok(())
}

fn bad_offsets(i: usize, data_len: usize) -> String {
    format!(
        "VIN chunk {}: offsets must be at least one, non-negative, never decrease and end \
         within the {data_len} data bytes",
        i + 1
    )
}

/// Offsets that never decrease.
fn increasing<O: Offset>(o: &[O]) -> bool {
    o.windows(2)
        .fold(true, |ok, w| ok & (w[0].get() <= w[1].get()))
}

/// A string column held by Arrow, borrowed from Python: a list of `(offsets, data)` per
/// chunk, offsets int32 or int64 (`len + 1` of them, already sliced to the chunk), data
/// uint8. Nulls are the caller's business (it checks there are none).
pub struct ArrowStrings<'py> {
    chunks: Vec<(Offsets<'py>, PyReadonlyArray1<'py, u8>)>,
}

/// A stretch of rows of one chunk (the chunk's index, for messages, and offsets and data).
#[derive(Clone, Copy)]
pub enum Segment<'a> {
    I32(usize, &'a [i32], &'a [u8]),
    I64(usize, &'a [i64], &'a [u8]),
}

impl Segment<'_> {
    pub fn rows(&self) -> usize {
        match self {
            Segment::I32(_, o, _) => o.len() - 1,
            Segment::I64(_, o, _) => o.len() - 1,
        }
    }

    /// The segment cut in stretches of about `rows` rows.
    fn split(self, rows: usize, out: &mut Vec<Self>) {
        fn cut<'a, O>(o: &'a [O], rows: usize, mut f: impl FnMut(&'a [O])) {
            let mut at = 0;
            while at + 1 < o.len() {
                let end = (at + rows).min(o.len() - 1);
                f(&o[at..=end]);
                at = end;
            }
        }
        match self {
            Segment::I32(i, o, d) => cut(o, rows, |o| out.push(Segment::I32(i, o, d))),
            Segment::I64(i, o, d) => cut(o, rows, |o| out.push(Segment::I64(i, o, d))),
        }
    }
}

/// Rows below which numbering does not split the work.
const MIN_SEGMENT: usize = 16_384;

impl<'py> ArrowStrings<'py> {
    pub fn new(chunks: &[(Bound<'py, PyAny>, Bound<'py, PyAny>)]) -> PyResult<Self> {
        let chunks = chunks
            .iter()
            .enumerate()
            .map(|(i, (o, d))| {
                let d = array1::<u8>(d, &format!("VIN chunk {}: data", i + 1), None)?;
                Ok((offsets(o, i)?, d))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let s = ArrowStrings { chunks };
        for (i, (o, d)) in s.chunks.iter().enumerate() {
            let d = d.as_slice().map_err(|_| not_contiguous(i))?;
            match o {
                Offsets::I32(o) => {
                    checked(o.as_slice().map_err(|_| not_contiguous(i))?, d.len(), i)?
                }
                Offsets::I64(o) => {
                    checked(o.as_slice().map_err(|_| not_contiguous(i))?, d.len(), i)?
                }
            }
        }
        let rows = s.rows();
        if rows > u32::MAX as usize {
            return Err(invalid(format!(
                "VIN column: {rows} rows is more than this build numbers"
            )));
        }
        Ok(s)
    }

    /// Rows of the column.
    pub fn rows(&self) -> usize {
        self.segments().iter().map(Segment::rows).sum()
    }

    /// The chunks as plain slices, for [`factorize`] without the interpreter lock.
    pub fn segments(&self) -> Vec<Segment<'_>> {
        self.chunks
            .iter()
            .enumerate()
            .map(|(i, (o, d))| {
                let d = d.as_slice().expect("checked in new");
                match o {
                    Offsets::I32(o) => Segment::I32(i, o.as_slice().expect("checked in new"), d),
                    Offsets::I64(o) => Segment::I64(i, o.as_slice().expect("checked in new"), d),
                }
            })
            .collect()
    }
}

/// Numbers the strings of `whole` (a column's chunks, [`ArrowStrings::segments`]) by first
/// appearance: `(uniques, codes)`. Long columns are cut into segments numbered in
/// parallel, then merged in order (a string's first appearance is in the first segment
/// holding it, so segment order keeps the global order). Offsets that decrease are an
/// error (the message names the chunk).
pub fn factorize<'a>(whole: Vec<Segment<'a>>) -> Result<(Vec<&'a [u8]>, Vec<u32>), String> {
    let rows: usize = whole.iter().map(Segment::rows).sum();
    let threads = rayon::current_num_threads();
    let per = if threads > 1 && rows >= 2 * MIN_SEGMENT {
        (rows / threads).max(MIN_SEGMENT)
    } else {
        usize::MAX
    };
    let mut segments = Vec::new();
    for s in whole {
        s.split(per, &mut segments);
    }
    let number = |s: &Segment<'a>| {
        let (mut f, mut runs) = (Factorizer::default(), Vec::new());
        match *s {
            Segment::I32(i, o, d) => {
                increasing(o)
                    .then_some(())
                    .ok_or_else(|| bad_offsets(i, d.len()))?;
                f.chunk(o, d, &mut runs)
            }
            Segment::I64(i, o, d) => {
                increasing(o)
                    .then_some(())
                    .ok_or_else(|| bad_offsets(i, d.len()))?;
                f.chunk(o, d, &mut runs)
            }
        }
        Ok((f.uniques, runs))
    };
    let local: Vec<_> = if segments.len() > 1 {
        segments
            .par_iter()
            .map(number)
            .collect::<Result<_, String>>()?
    } else {
        segments.iter().map(number).collect::<Result<_, String>>()?
    };
    // Merge: a segment's own numbers mapped to first appearance in the whole column (a
    // string's first appearance is in the first segment holding it).
    let mut global = Factorizer::default();
    let maps: Vec<Vec<u32>> = local
        .iter()
        .map(|(uniques, _)| uniques.iter().map(|u| global.code(u)).collect())
        .collect();
    // The codes, each segment filling its own rows from its runs.
    let mut codes: Vec<u32> = Vec::with_capacity(rows);
    let mut parts = Vec::with_capacity(segments.len());
    let mut rest = &mut codes.spare_capacity_mut()[..rows];
    for ((s, (_, runs)), map) in segments.iter().zip(&local).zip(&maps) {
        let (head, tail) = rest.split_at_mut(s.rows());
        parts.push((head, runs, map));
        rest = tail;
    }
    let fill = |(out, runs, map): (&mut [MaybeUninit<u32>], &Runs, &Vec<u32>)| {
        let mut at = 0;
        for &(c, len) in runs {
            let len = len as usize;
            out[at..at + len].fill(MaybeUninit::new(map[c as usize]));
            at += len;
        }
        assert_eq!(at, out.len(), "a segment's runs cover its rows");
    };
    if parts.len() > 1 {
        parts.into_par_iter().for_each(fill);
    } else {
        parts.into_iter().for_each(fill);
    }
    // SAFETY: the segments' rows are `rows` in all, each segment's part was filled
    // entirely (asserted; a panic leaves the length at 0).
    unsafe { codes.set_len(rows) };
    Ok((global.uniques, codes))
}

fn not_contiguous(i: usize) -> PyErr {
    invalid(format!(
        "VIN chunk {}: the arrays must be contiguous",
        i + 1
    ))
}

/// The distinct strings as Rust strings (Arrow strings are UTF-8; checked): the message
/// of an error names the string.
pub fn utf8(uniques: &[&[u8]]) -> Result<Vec<String>, String> {
    uniques
        .iter()
        .enumerate()
        .map(|(i, u)| {
            std::str::from_utf8(u)
                .map(str::to_owned)
                .map_err(|e| format!("VIN #{}: not UTF-8 ({e})", i + 1))
        })
        .collect()
}

/// Codes of a string column held by Arrow: `chunks` is a list of `(offsets, data)` per
/// chunk, offsets int32 or int64 (`len + 1` of them, already sliced to the chunk), data
/// uint8. The caller has checked there are no nulls. Returns `(uniques, codes)`: the
/// distinct strings in order of first appearance and a uint32 code per row.
#[pyfunction]
pub fn factorize_strings<'py>(
    py: Python<'py>,
    chunks: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
) -> PyResult<(Vec<String>, Bound<'py, PyArray1<u32>>)> {
    let strings = ArrowStrings::new(&chunks)?;
    let segments = strings.segments();
    let (uniques, codes) = py
        .detach(|| crate::in_pool(|| factorize(segments)))
        .map_err(invalid)?;
    Ok((utf8(&uniques).map_err(invalid)?, codes.into_pyarray(py)))
}

/// Renumbers integer codes (a categorical's, `n` categories) by first appearance. Returns
/// `(order, codes)`: `order[k]` is the category of the k-th distinct code, `codes` the new
/// uint32 code per row. A negative code (a missing value) is an error naming the row (and
/// `what`, the table).
#[pyfunction]
#[pyo3(signature = (codes, n, what="daily table"))]
#[allow(clippy::type_complexity)]
pub fn first_appearance<'py>(
    py: Python<'py>,
    codes: &Bound<'py, PyAny>,
    n: usize,
    what: &str,
) -> PyResult<(Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<u32>>)> {
    let codes = array1::<i64>(codes, "VIN codes", None)?;
    let codes = slice1(&codes);
    // Err((row, code)): the first row whose code is not a category.
    let (order, new) = py
        .detach(|| -> Result<_, (usize, i64)> {
            let mut seen = vec![u32::MAX; n];
            let mut order = Vec::new();
            let mut new = Vec::with_capacity(codes.len());
            for (i, &c) in codes.iter().enumerate() {
                let s = usize::try_from(c)
                    .ok()
                    .and_then(|c| seen.get_mut(c))
                    .ok_or((i, c))?;
                if *s == u32::MAX {
                    *s = order.len() as u32;
                    order.push(c);
                }
                new.push(*s);
            }
            Ok((order, new))
        })
        .map_err(|(i, c)| {
            if c < 0 {
                crate::window::no_vin(what, i, c)
            } else {
                invalid(format!(
                    "VIN codes: row {} has code {c}, but there are {n} categories",
                    i + 1
                ))
            }
        })?;
    Ok((order.into_pyarray(py), new.into_pyarray(py)))
}
