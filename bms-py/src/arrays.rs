//! Reading numpy arrays handed in from Python: dtype, ndim and length checks with messages
//! that name the argument, and borrowing (not copying) C-contiguous data.

use std::alloc::Layout;
use std::ptr::NonNull;

use numpy::{
    PyArray, PyArrayDescrMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArray,
    PyUntypedArrayMethods, dtype,
};
use pyo3::prelude::*;

use crate::errors::invalid;

/// A 2-D float array, float32 or float64, borrowed from numpy.
pub enum Floats2<'py> {
    F64(PyReadonlyArray2<'py, f64>),
    F32(PyReadonlyArray2<'py, f32>),
}

impl Floats2<'_> {
    pub fn shape(&self) -> (usize, usize) {
        let s = match self {
            Floats2::F64(a) => a.shape(),
            Floats2::F32(a) => a.shape(),
        };
        (s[0], s[1])
    }
}

fn describe(a: &Bound<'_, PyUntypedArray>) -> String {
    format!("a {}-D {} array", a.ndim(), a.dtype())
}

fn untyped<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyUntypedArray>> {
    obj.cast::<PyUntypedArray>().cloned().map_err(|_| {
        let t = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        invalid(format!("{what}: expected a numpy array, got {t}"))
    })
}

/// `obj` as a 2-D float32/float64 array.
pub fn floats2<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Floats2<'py>> {
    let py = obj.py();
    let a = untyped(obj, what)?;
    if a.ndim() != 2 {
        return Err(invalid(format!(
            "{what}: expected a 2-D float32 or float64 array, got {}",
            describe(&a)
        )));
    }
    let dt = a.dtype();
    if dt.is_equiv_to(&dtype::<f64>(py)) {
        Ok(Floats2::F64(obj.extract::<PyReadonlyArray2<'py, f64>>()?))
    } else if dt.is_equiv_to(&dtype::<f32>(py)) {
        Ok(Floats2::F32(obj.extract::<PyReadonlyArray2<'py, f32>>()?))
    } else {
        Err(invalid(format!(
            "{what}: expected a 2-D float32 or float64 array, got {}",
            describe(&a)
        )))
    }
}

/// `obj` as a 1-D array of `T` with `len` elements (`None` = any length).
pub fn array1<'py, T: numpy::Element>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    len: Option<usize>,
) -> PyResult<PyReadonlyArray1<'py, T>> {
    let py = obj.py();
    let a = untyped(obj, what)?;
    let want = dtype::<T>(py);
    if a.ndim() != 1 || !a.dtype().is_equiv_to(&want) {
        return Err(invalid(format!(
            "{what}: expected a 1-D {want} array, got {}",
            describe(&a)
        )));
    }
    if let Some(n) = len
        && a.len() != n
    {
        return Err(invalid(format!(
            "{what}: expected {n} values (one per row), got {}",
            a.len()
        )));
    }
    obj.extract::<PyReadonlyArray1<'py, T>>()
}

/// A 1-D array as a contiguous slice: borrowed when contiguous, copied otherwise.
pub fn slice1<'a, T: numpy::Element + Copy>(
    a: &'a PyReadonlyArray1<'_, T>,
) -> std::borrow::Cow<'a, [T]> {
    match a.as_slice() {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(a.as_array().iter().copied().collect()),
    }
}

/// Memory of output arrays: allocated and filled without the interpreter lock, then the
/// base object of the numpy views handed to Python (freed when the last view goes).
///
/// The kernel is asked for huge pages (faulted in 2 MB at a time instead of 4 kB: writing
/// a fresh 100 MB buffer is dominated by page faults otherwise): buffers of [`REUSED`] or
/// more, which the allocator always maps afresh, are 2 MB aligned and sized (numpy asks for
/// huge pages too, but the ends of its allocations fall outside 2 MB boundaries); smaller
/// ones are placed by the allocator, which reuses memory freed earlier, and get huge pages
/// for the 2 MB pages inside them.
#[pyclass(frozen, module = "bms._bms")]
pub struct Buffer {
    ptr: NonNull<u8>,
    layout: Layout,
    /// Where each part starts (64-byte aligned).
    at: Vec<usize>,
}

// SAFETY: a plain allocation owned by this object; Rust writes its parts before any view
// exists, numpy reads and writes them through the views only.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `Buffer::new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// A huge page.
const HUGE: usize = 2 << 20;

/// Buffers below this are left to the allocator's placement (glibc serves them from memory
/// freed earlier once it has seen such sizes freed, which saves faulting fresh pages in).
const REUSED: usize = 32 << 20;

impl Buffer {
    /// An uninitialised buffer of parts of `sizes` bytes.
    pub fn new(sizes: &[usize]) -> Result<Self, String> {
        let too_large = || format!("cannot allocate outputs of {sizes:?} bytes");
        let mut at = Vec::with_capacity(sizes.len());
        let mut end = 0usize;
        for &s in sizes {
            at.push(end);
            end = s
                .checked_next_multiple_of(64)
                .and_then(|s| end.checked_add(s))
                .ok_or_else(too_large)?;
        }
        let layout = if end >= REUSED {
            end.checked_next_multiple_of(HUGE)
                .and_then(|size| Layout::from_size_align(size, HUGE).ok())
        } else {
            Layout::from_size_align(end.max(64), 64).ok()
        }
        .ok_or_else(too_large)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) }).ok_or_else(too_large)?;
        #[cfg(target_os = "linux")]
        if layout.size() >= 2 * HUGE {
            // The whole 2 MB pages inside. SAFETY: within this allocation; a refusal (no
            // THP) is harmless.
            let at = ptr.as_ptr() as usize;
            let (a, b) = (
                at.next_multiple_of(HUGE),
                (at + layout.size()) / HUGE * HUGE,
            );
            if b > a {
                unsafe {
                    libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE);
                }
            }
        }
        Ok(Buffer { ptr, layout, at })
    }

    /// Part `i` as `len` values of `T`.
    ///
    /// # Safety
    /// `len` values of `T` must fit in part `i`, `T` must be plain data (every bit pattern
    /// valid) aligned to at most 64 bytes, and a part must not be borrowed twice at once
    /// nor after its view is made.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn part<T>(&self, i: usize, len: usize) -> &mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.at[i]).cast(), len) }
    }
}

/// A numpy view of part `i` of `buffer`: a C-order array of `shape`, which keeps the
/// buffer alive.
///
/// # Safety
/// As for [`Buffer::part`]; the part must have been written.
pub unsafe fn view<'py, T: numpy::Element, D: ndarray::Dimension>(
    buffer: &Bound<'py, Buffer>,
    i: usize,
    shape: impl ndarray::IntoDimension<Dim = D>,
) -> Bound<'py, PyArray<T, D>> {
    let b = buffer.get();
    unsafe {
        let data = b.ptr.as_ptr().add(b.at[i]).cast::<T>();
        let v = ndarray::ArrayView::from_shape_ptr(shape, data);
        PyArray::borrow_from_array(&v, buffer.clone().into_any())
    }
}
