//! `windows`: a daily table's windows and labels (`bms_core::window`), and the bindings'
//! thread pool.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use numpy::{PyArray1, PyArray2, PyReadonlyArray1};
use pyo3::exceptions::PyMemoryError;
use pyo3::prelude::*;
use pyo3::types::PyList;
use rayon::prelude::*;

use bms_core::daily::DailyColumn;
use bms_core::{BmsError, ColumnPlan, DailyColumns, WindowSpec};

use crate::arrays::{Buffer, array1, slice1, view};
use crate::errors::{invalid, to_py};

use crate::convert::*;
use crate::vins;

pub(crate) fn spec_from(
    features: &[String],
    context: usize,
    horizon: usize,
    fill: f64,
    full_horizon: bool,
) -> PyResult<WindowSpec> {
    let features = features
        .iter()
        .map(|f| DailyColumn::from_name(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(to_py)?;
    let spec = WindowSpec {
        context,
        horizon,
        features,
        fill,
        full_horizon,
    };
    spec.validate().map_err(to_py)?;
    Ok(spec)
}

/// Nanoseconds per day: key dates go back as datetime64[ns] values.
pub(crate) const NS_PER_DAY: i64 = bms_core::window::NANOS_PER_DAY;

/// Vehicle codes, each an index into the VINs: uint32 (borrowed when contiguous) or int64
/// (a negative code is a missing VIN), checked against the number of VINs.
pub(crate) enum Codes<'py> {
    U32(PyReadonlyArray1<'py, u32>),
    I64(Vec<u32>),
}

impl<'py> Codes<'py> {
    pub(crate) fn new(codes: &Bound<'py, PyAny>, n_vins: usize, what: &str) -> PyResult<Self> {
        if let Ok(c) = array1::<u32>(codes, "VIN codes", None) {
            let codes = Codes::U32(c);
            if let Some((i, &c)) = codes
                .slice()
                .iter()
                .enumerate()
                .find(|&(_, &c)| c as usize >= n_vins)
            {
                return Err(no_vin(what, i, i64::from(c)));
            }
            return Ok(codes);
        }
        let c = array1::<i64>(codes, "VIN codes", None).map_err(|_| {
            invalid(format!(
                "VIN codes: expected a 1-D int64 or uint32 array, got {}",
                codes
                    .getattr("dtype")
                    .map(|d| d.to_string())
                    .unwrap_or_else(|_| "something else".into())
            ))
        })?;
        let s = slice1(&c);
        if let Some((i, &c)) = s
            .iter()
            .enumerate()
            .find(|&(_, &c)| c < 0 || c as usize >= n_vins)
        {
            return Err(no_vin(what, i, c));
        }
        Ok(Codes::I64(s.iter().map(|&c| c as u32).collect()))
    }

    pub(crate) fn slice(&self) -> Cow<'_, [u32]> {
        match self {
            Codes::U32(c) => slice1(c),
            Codes::I64(c) => Cow::Borrowed(c),
        }
    }
}

/// The VIN column handed to `windows`.
pub(crate) enum Vins<'py> {
    /// Distinct VINs and a code per row.
    Numbered(Vec<String>, Codes<'py>),
    /// Arrow strings, numbered by first appearance in the call.
    Arrow(vins::ArrowStrings<'py>),
}

/// The error of a missing (or unknown) VIN code at 0-based row `i`.
pub(crate) fn no_vin(what: &str, i: usize, code: i64) -> PyErr {
    invalid(format!(
        "{what}: row {} has no VIN (code {code}; missing VINs are not allowed)",
        i + 1
    ))
}

/// The VIN of every window as Arrow `large_string` buffers: `offsets` (one more than the
/// windows) and `data`; vehicle `v` has `counts[v]` windows, the output holds them in
/// vehicle order.
pub(crate) fn key_strings_into(
    vins: &[String],
    counts: &[usize],
    offsets: &mut [i64],
    data: &mut [u8],
) {
    offsets[0] = 0;
    let (mut k, mut b) = (1, 0);
    for (vin, &c) in vins.iter().zip(counts) {
        let s = vin.as_bytes();
        for (j, o) in offsets[k..k + c].iter_mut().enumerate() {
            *o = (b + (j + 1) * s.len()) as i64;
        }
        // The VIN once, then the filled stretch copied onto what follows (doubling).
        let run = &mut data[b..b + c * s.len()];
        if c > 0 {
            run[..s.len()].copy_from_slice(s);
            let mut done = s.len();
            while done < run.len() {
                let more = done.min(run.len() - done);
                run.copy_within(..more, done);
                done += more;
            }
        }
        k += c;
        b += c * s.len();
    }
}

/// Windows (SPEC §5) of a daily table given as columns. The VINs come either numbered —
/// `vins` a list of the distinct VINs and `codes[i]` (int64 or uint32) the index of row
/// i's — or, with `vins` None, as Arrow strings: `codes` a list of `(offsets, data)` per
/// chunk (int32/int64 offsets sliced to the chunk, uint8 data; no nulls), numbered here
/// by first appearance. `days` are day numbers since 1970-01-01 or, with `day_unit`,
/// counts of `1 / day_unit` days (a datetime64 column's int64 view; NaT is an error),
/// `columns[k]` holds feature `features[k]` (float64), `labels` the Label column
/// (float64; None = no labels).
///
/// Returns `(x, y, key_vins, key_dates)`: key_vins is the uint32 code of each window's VIN
/// (in `vins` order), or with `key_strings` the Arrow `large_string` buffers
/// `(offsets int64, data uint8)` of the VINs themselves; key_dates are int64 nanoseconds
/// since 1970-01-01 (a datetime64[ns] view). The arrays are views of two allocations
/// (`x`'s own, and one for the rest).
#[pyfunction]
#[pyo3(signature = (vins, codes, days, columns, features, labels=None, context=14, horizon=14, fill=-1.0, full_horizon=false, day_unit=None, key_strings=false))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(crate) fn windows<'py>(
    py: Python<'py>,
    vins: Option<&Bound<'py, PyList>>,
    codes: &Bound<'py, PyAny>,
    days: &Bound<'py, PyAny>,
    columns: Vec<Bound<'py, PyAny>>,
    features: Vec<String>,
    labels: Option<&Bound<'py, PyAny>>,
    context: usize,
    horizon: usize,
    fill: f64,
    full_horizon: bool,
    day_unit: Option<i64>,
    key_strings: bool,
) -> PyResult<(
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyAny>,
    Bound<'py, PyArray1<i64>>,
)> {
    let spec = spec_from(&features, context, horizon, fill, full_horizon)?;
    if columns.len() != spec.features.len() {
        return Err(invalid(format!(
            "windows: {} feature names but {} columns",
            spec.features.len(),
            columns.len()
        )));
    }
    if day_unit.is_some_and(|u| u < 1) {
        return Err(invalid("day_unit: must be at least 1 per day"));
    }
    let input = match vins {
        Some(v) => {
            let v = vin_strings(v)?;
            let c = Codes::new(codes, v.len(), "daily table")?;
            Vins::Numbered(v, c)
        }
        None => {
            let chunks = codes
                .extract::<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>>()
                .map_err(|_| {
                    invalid(
                        "VIN codes: without a VIN list, expected a list of Arrow (offsets, \
                         data) chunks",
                    )
                })?;
            Vins::Arrow(vins::ArrowStrings::new(&chunks)?)
        }
    };
    let numbered = match &input {
        Vins::Numbered(v, c) => VinSlices::Numbered(v, c.slice()),
        Vins::Arrow(s) => VinSlices::Arrow(s.segments()),
    };
    let n = match &numbered {
        VinSlices::Numbered(_, c) => c.len(),
        VinSlices::Arrow(s) => s.iter().map(vins::Segment::rows).sum(),
    };
    let days = array1::<i64>(days, "Date", Some(n))?;
    let cols = columns
        .iter()
        .zip(&features)
        .map(|(c, name)| array1::<f64>(c, name, Some(n)))
        .collect::<PyResult<Vec<_>>>()?;
    let labels = labels
        .map(|l| array1::<f64>(l, "Label", Some(n)))
        .transpose()?;
    let days = slice1(&days);
    let cols: Vec<Cow<'_, [f64]>> = cols.iter().map(slice1).collect();
    let labels = labels.as_ref().map(slice1);
    let features: Vec<&[f64]> = cols.iter().map(|c| &c[..]).collect();
    let width = spec.width();
    let done = py.detach(|| {
        in_pool(|| -> Result<Written, Failure> {
            let (vins, vehicle): (Cow<'_, [String]>, Cow<'_, [u32]>) = match numbered {
                VinSlices::Numbered(v, c) => (Cow::Borrowed(v), c),
                VinSlices::Arrow(segments) => {
                    let (uniques, codes) = vins::factorize(segments).map_err(Failure::Invalid)?;
                    let names = vins::utf8(&uniques).map_err(Failure::Invalid)?;
                    (Cow::Owned(names), Cow::Owned(codes))
                }
            };
            let table = DailyColumns {
                vins: &vins,
                vehicle: &vehicle,
                day: &days,
                ticks_per_day: day_unit.unwrap_or(1),
                features: &features,
                label: labels.as_deref(),
            };
            let plan = ColumnPlan::new(&table, &spec).map_err(Failure::Core)?;
            let n = plan.len();
            let counts: Vec<usize> = plan.window_counts().collect();
            let vin_bytes: usize = if key_strings {
                counts
                    .iter()
                    .zip(vins.iter())
                    .map(|(&c, v)| c * v.len())
                    .sum()
            } else {
                0
            };
            // y, the key dates and the key VINs share one buffer, X has its own.
            let x = Buffer::new(&[4 * n * width]).map_err(Failure::Memory)?;
            let sizes = if key_strings {
                [4 * n, 8 * n, 8 * (n + 1), vin_bytes]
            } else {
                [4 * n, 8 * n, 4 * n, 0]
            };
            let rest = Buffer::new(&sizes).map_err(Failure::Memory)?;
            // SAFETY: distinct parts, typed and sized as laid out above, written here
            // before any view of them exists.
            let (xs, ys, dates) = unsafe {
                (
                    x.part::<f32>(0, n * width),
                    rest.part::<f32>(0, n),
                    rest.part::<i64>(1, n),
                )
            };
            rayon::join(
                || {
                    let codes = (!key_strings).then(|| unsafe { rest.part::<u32>(2, n) });
                    plan.write(xs, ys, codes, dates);
                },
                || {
                    if key_strings {
                        let (offsets, data) =
                            unsafe { (rest.part::<i64>(2, n + 1), rest.part::<u8>(3, vin_bytes)) };
                        key_strings_into(&vins, &counts, offsets, data);
                    }
                },
            );
            // Every window's day lies between two days of the table: datetime64[ns] holds
            // them unless the table itself goes beyond 1677–2262.
            dates
                .par_chunks_mut(1 << 16)
                .try_for_each(|dates| {
                    for d in dates {
                        *d = d.checked_mul(NS_PER_DAY).ok_or(*d)?;
                    }
                    Ok(())
                })
                .map_err(|d: i64| {
                    Failure::Invalid(format!(
                        "daily table: the window date {} is outside the range of \
                         datetime64[ns] (1677-09-21 to 2262-04-11)",
                        bms_core::daily::date_of_day(d)
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| format!("{d} days after 1970-01-01"))
                    ))
                })?;
            Ok(Written {
                x,
                rest,
                n,
                vin_bytes,
            })
        })
    });
    let Written {
        x,
        rest,
        n,
        vin_bytes,
    } = done.map_err(|e| match e {
        Failure::Core(e) => to_py(e),
        Failure::Invalid(m) => invalid(m),
        Failure::Memory(m) => PyMemoryError::new_err(m),
    })?;
    let (x, rest) = (Bound::new(py, x)?, Bound::new(py, rest)?);
    // SAFETY: every part was written above.
    unsafe {
        let key_vins = if key_strings {
            let offsets = view::<i64, _>(&rest, 2, n + 1);
            let data = view::<u8, _>(&rest, 3, vin_bytes);
            (offsets, data).into_pyobject(py)?.into_any()
        } else {
            view::<u32, _>(&rest, 2, n).into_any()
        };
        Ok((
            view::<f32, _>(&x, 0, [n, width]),
            view::<f32, _>(&rest, 0, n),
            key_vins,
            view::<i64, _>(&rest, 1, n),
        ))
    }
}

/// The VIN column of `windows` as slices, for the work without the interpreter lock.
pub(crate) enum VinSlices<'a> {
    Numbered(&'a [String], Cow<'a, [u32]>),
    Arrow(Vec<vins::Segment<'a>>),
}

/// What `windows` computes without the interpreter lock.
pub(crate) struct Written {
    x: Buffer,
    rest: Buffer,
    n: usize,
    vin_bytes: usize,
}

/// Why `windows` failed without the interpreter lock (turned into an exception after).
pub(crate) enum Failure {
    Core(BmsError),
    Invalid(String),
    Memory(String),
}

/// Runs `f` on a thread of the bindings' rayon pool while the caller waits (`f`'s parallel
/// parts use that pool): its sequential parts then do not compete for a core with the
/// pool's threads, which look for work for a while before they sleep (on two cores, two
/// busy threads rather than three).
pub(crate) fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}

/// The bindings' thread pool (one thread per core), made again in a process forked from
/// one that had it: threads do not survive `fork()`, and a child handing work to its
/// parent's pool (rayon's global one, say) would wait for them forever.
pub(crate) fn pool() -> Arc<rayon::ThreadPool> {
    static POOL: Mutex<Option<(u32, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((owner, p)) = pool.as_ref()
        && *owner == pid
    {
        return p.clone();
    }
    let new = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("bms-{i}"))
            .build()
            .expect("a thread pool"),
    );
    // A pool inherited from the parent has no threads here: forget it rather than ask
    // them to stop.
    if let Some(inherited) = pool.replace((pid, new.clone())) {
        std::mem::forget(inherited);
    }
    new
}
