//! Containers: an opened .dcz file or memory image.
use crate::error::{check, invalid, Result};
use crate::types::{owned_str, ContainerInfo, TensorInfo};
use deltacome_sys as sys;
use std::ffi::{c_void, CString};
use std::marker::PhantomData;
use std::path::Path;
use std::ptr::{self, NonNull};

/// Options for [`Container::open_with`] and the memory openers.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Read with pread instead of mapping the file.
    pub no_mmap: bool,
    /// Skip segment checksums on load ([`Container::verify`] still checks them).
    pub trusted: bool,
    /// Refuse larger manifests (default 256 MiB).
    pub max_manifest_bytes: u64,
    /// Refuse larger decompressed segments (default 4 GiB).
    pub max_segment_bytes: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        let mut o = sys::dc_open_options::zeroed();
        // SAFETY: fills a struct we own.
        unsafe { sys::dc_open_options_init(&mut o) };
        OpenOptions {
            no_mmap: o.flags & sys::DC_OPEN_NO_MMAP != 0,
            trusted: o.flags & sys::DC_OPEN_TRUSTED != 0,
            max_manifest_bytes: o.max_manifest_bytes,
            max_segment_bytes: o.max_segment_bytes,
        }
    }
}

impl OpenOptions {
    fn raw(&self, borrow: bool) -> sys::dc_open_options {
        let mut o = sys::dc_open_options::zeroed();
        // SAFETY: fills a struct we own.
        unsafe { sys::dc_open_options_init(&mut o) };
        o.flags = (if self.no_mmap { sys::DC_OPEN_NO_MMAP } else { 0 })
            | (if self.trusted { sys::DC_OPEN_TRUSTED } else { 0 })
            | (if borrow { sys::DC_OPEN_BORROW_MEMORY } else { 0 });
        o.max_manifest_bytes = self.max_manifest_bytes;
        o.max_segment_bytes = self.max_segment_bytes;
        o
    }
}

/// An opened container. Immutable after open.
///
/// `'buf` is the lifetime of a borrowed memory image ([`Container::from_borrowed`]); containers
/// opened from a file or a copied image are `Container<'static>`. Deltas loaded from a borrowed
/// image are tied to `'buf` too (the header requires the buffer to outlive them).
pub struct Container<'buf> {
    raw: NonNull<sys::dc_container>,
    _buf: PhantomData<&'buf [u8]>,
}

// SAFETY: the header says an opened container is immutable and "functions taking only a
// dc_container are safe to call concurrently"; loading from it into different contexts on different
// threads is allowed too (the context is the per-thread object). So it may be sent to and shared
// between threads. The borrowed buffer is a `&'buf [u8]`, itself Send + Sync.
unsafe impl Send for Container<'_> {}
unsafe impl Sync for Container<'_> {}

impl Container<'static> {
    /// Opens and validates the .dcz file at `path` (payload segments are read on load).
    pub fn open(path: impl AsRef<Path>) -> Result<Container<'static>> {
        Self::open_with(path, &OpenOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Container<'static>> {
        let path = path.as_ref();
        let c_path = path_to_cstring(path)?;
        let raw_opts = opts.raw(false);
        let mut out = ptr::null_mut();
        // SAFETY: valid out pointer, NUL-terminated path, options initialised by dc_open_options_init.
        check(unsafe { sys::dc_container_open(&mut out, c_path.as_ptr(), &raw_opts) })?;
        Ok(Container::from_raw(out))
    }

    /// Opens a whole .dcz image held in memory; the library copies it.
    pub fn from_bytes(data: &[u8]) -> Result<Container<'static>> {
        Self::from_bytes_with(data, &OpenOptions::default())
    }

    pub fn from_bytes_with(data: &[u8], opts: &OpenOptions) -> Result<Container<'static>> {
        let raw_opts = opts.raw(false);
        let mut out = ptr::null_mut();
        // SAFETY: data/len describe a live slice; without BORROW the library copies it.
        check(unsafe {
            sys::dc_container_open_memory(&mut out, data.as_ptr() as *const c_void, data.len(), &raw_opts)
        })?;
        Ok(Container::from_raw(out))
    }
}

impl<'buf> Container<'buf> {
    /// Opens an image without copying it. The borrow keeps `data` alive and unmodified while the
    /// container and every delta loaded from it live, as the header requires.
    pub fn from_borrowed(data: &'buf [u8]) -> Result<Container<'buf>> {
        let raw_opts = OpenOptions::default().raw(true);
        let mut out = ptr::null_mut();
        // SAFETY: `data` outlives the container and its deltas through 'buf (see Context::load).
        check(unsafe {
            sys::dc_container_open_memory(&mut out, data.as_ptr() as *const c_void, data.len(), &raw_opts)
        })?;
        Ok(Container::from_raw(out))
    }

    fn from_raw(p: *mut sys::dc_container) -> Container<'buf> {
        Container { raw: NonNull::new(p).expect("dc_container_open returned DC_OK and NULL"), _buf: PhantomData }
    }

    pub(crate) fn as_ptr(&self) -> *const sys::dc_container {
        self.raw.as_ptr()
    }

    /// Format version, sizes and the producer's metadata.
    pub fn info(&self) -> Result<ContainerInfo> {
        let mut i = sys::dc_container_info::zeroed();
        // SAFETY: live handle, struct with struct_size set.
        check(unsafe { sys::dc_container_get_info(self.as_ptr(), &mut i) })?;
        Ok(ContainerInfo {
            format_major: i.format_major,
            format_minor: i.format_minor,
            tensor_count: i.tensor_count,
            file_bytes: i.file_bytes,
            payload_bytes: i.payload_bytes,
            model_name: owned_str(i.model_name),
            base_model_name: owned_str(i.base_model_name),
            tool_version: owned_str(i.tool_version),
            recipe_json: owned_str(i.recipe_json),
        })
    }

    pub fn tensor_count(&self) -> u64 {
        // SAFETY: live handle.
        unsafe { sys::dc_container_tensor_count(self.as_ptr()) }
    }

    /// Information on tensor `index` (< tensor_count).
    pub fn tensor_info(&self, index: u64) -> Result<TensorInfo> {
        let mut t = sys::dc_tensor_info::zeroed();
        // SAFETY: live handle; the library bounds-checks index.
        check(unsafe { sys::dc_container_tensor_info(self.as_ptr(), index, &mut t) })?;
        Ok(TensorInfo::from_raw(index, &t))
    }

    /// Every tensor, in container order.
    pub fn tensors(&self) -> Result<Vec<TensorInfo>> {
        (0..self.tensor_count()).map(|i| self.tensor_info(i)).collect()
    }

    /// Index of tensor `name`; `Status::NotFound` if absent.
    pub fn find(&self, name: &str) -> Result<u64> {
        let c_name = CString::new(name).map_err(|_| invalid(format!("tensor name {name:?} contains NUL")))?;
        let mut index = 0u64;
        // SAFETY: live handle, NUL-terminated name, valid out pointer.
        check(unsafe { sys::dc_container_find_tensor(self.as_ptr(), c_name.as_ptr(), &mut index) })?;
        Ok(index)
    }

    /// The singular values σ of low-rank tensor `index` (rank of them).
    pub fn singular_values(&self, index: u64) -> Result<Vec<f32>> {
        let mut count = 0u64;
        // SAFETY: query with out = NULL.
        check(unsafe { sys::dc_container_singular_values(self.as_ptr(), index, ptr::null_mut(), 0, &mut count) })?;
        let mut v = vec![0f32; usize::try_from(count).map_err(|_| invalid("rank does not fit usize"))?];
        // SAFETY: `v` has room for `count` values.
        check(unsafe {
            sys::dc_container_singular_values(self.as_ptr(), index, v.as_mut_ptr(), v.len() as u64, &mut count)
        })?;
        v.truncate(count as usize);
        Ok(v)
    }

    /// Decompresses every segment and checks sizes, XXH3-64 digests and zero padding.
    pub fn verify(&self) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::dc_container_verify(self.as_ptr()) })
    }

    /// Checks one base tensor's raw little-endian bytes against the recorded fingerprint.
    pub fn check_base_tensor(&self, name: &str, data: &[u8]) -> Result<()> {
        let c_name = CString::new(name).map_err(|_| invalid(format!("tensor name {name:?} contains NUL")))?;
        // SAFETY: live handle; data/len describe a live slice read during the call only.
        check(unsafe {
            sys::dc_container_check_base_tensor(self.as_ptr(), c_name.as_ptr(), data.as_ptr() as *const c_void,
                                                data.len() as u64)
        })
    }

    /// Checks a whole base checkpoint (.safetensors or model.safetensors.index.json).
    pub fn check_base_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let c_path = path_to_cstring(path.as_ref())?;
        // SAFETY: live handle, NUL-terminated path.
        check(unsafe { sys::dc_container_check_base_file(self.as_ptr(), c_path.as_ptr()) })
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the handle; deltas loaded from it hold their own copy of the data.
        unsafe { sys::dc_container_close(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Container<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container").field("tensor_count", &self.tensor_count()).finish()
    }
}

pub(crate) fn path_to_cstring(path: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| invalid(format!("path {} contains a NUL byte", path.display())))
}
