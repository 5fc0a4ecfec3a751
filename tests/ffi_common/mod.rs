//! Shared by the C-ABI tests: C strings in and out, and an owned client
//! handle that frees itself, so a failing test leaks nothing.
#![allow(dead_code)]

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use chinwag::ffi::codes::{cw_dialect, cw_result as R};
use chinwag::ffi::*;

pub fn cs(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// A borrowed C string as an owned Rust one; None for NULL.
pub fn text(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        Some(unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned())
    }
}

pub fn last_error() -> String {
    text(cw_last_error()).unwrap()
}

pub struct C(pub *mut cw_client);
unsafe impl Send for C {}
unsafe impl Sync for C {}
impl Drop for C {
    fn drop(&mut self) {
        unsafe { cw_client_free(self.0) }
    }
}

impl C {
    /// Connect to `host:port` in `dialect`; the test fails if that fails.
    pub fn connect_to(host: &str, port: u16, dialect: cw_dialect) -> C {
        let mut c = ptr::null_mut();
        let h = cs(host);
        let r = unsafe { cw_client_connect(h.as_ptr(), port, dialect as i32, &mut c) };
        assert_eq!(r, R::CW_OK, "{}", last_error());
        C(c)
    }
}
