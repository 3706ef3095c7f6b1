//! Binds libvirt.so.0 when the agent first needs it, not when it starts.
//!
//! The `virt` crate calls libvirt's C API by symbol name, and its build
//! script links libvirt.so.0, so the dynamic loader would map it and the 56
//! libraries behind it (glib, gnutls, libxml2, ICU, libcurl, ...) and bind
//! their ~18,000 symbols before `main`: about 20 ms and 15 MiB of every
//! run, even of `meta-data` or a monitor that asks libvirtd over its RPC
//! protocol ([`super::rpc`]). This module defines the libvirt functions
//! `virt` uses, each a trampoline to the real one that [`load`] finds with
//! dlopen/dlsym. The static linker binds `virt`'s references to these
//! definitions, and rustc links libraries `--as-needed`, so the binary no
//! longer lists libvirt.so.0 (tests/cli.rs checks that it does not).
//!
//! Each trampoline's signature is checked at compile time against the one
//! `virt::sys` declares. The binary keeps its full RELRO / BIND_NOW
//! hardening: the resolved pointers live in a `OnceLock`, not in the GOT.

use std::ffi::{c_void, CStr};
use std::os::raw::{c_char, c_int, c_uint, c_ulonglong};
use std::sync::OnceLock;

use virt::connect::Connect;
use virt::sys::{
    virConnectPtr, virDomainBlockInfoPtr, virDomainPtr, virErrorFunc, virErrorPtr, virInterfacePtr,
    virNetworkPtr, virNodeMemoryStatsPtr, virStoragePoolPtr, virTypedParameterPtr,
};

/// The library's SONAME: the ABI libvirt has kept since 0.x.
const LIBVIRT: &CStr = c"libvirt.so.0";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load libvirt.so.0: {0}")]
    Open(String),
    #[error("libvirt.so.0 has no {0} (libvirt too old)")]
    Symbol(&'static str),
}

/// dlerror()'s message for the last failed dlopen on this thread.
fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string owned by the
    // loader, valid until the next dl* call on this thread; it is copied
    // before any such call.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null, NUL-terminated (above).
        unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned()
    }
}

macro_rules! libvirt_api {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {
        /// The real functions, found in the loaded library.
        #[allow(non_snake_case)]
        struct Api {
            $($name: unsafe extern "C" fn($($ty),*) $(-> $ret)?,)*
        }

        impl Api {
            fn find(lib: *mut c_void) -> Result<Api, Error> {
                Ok(Api {
                    $($name: {
                        let sym = concat!(stringify!($name), "\0");
                        // SAFETY: `lib` is a handle dlopen returned and
                        // never closes; `sym` is NUL-terminated.
                        let p = unsafe { libc::dlsym(lib, sym.as_ptr().cast()) };
                        if p.is_null() {
                            return Err(Error::Symbol(stringify!($name)));
                        }
                        // SAFETY: libvirt exports this symbol as a function
                        // with the C signature virt::sys declares, which the
                        // field's type matches (checked below).
                        unsafe {
                            std::mem::transmute::<
                                *mut c_void,
                                unsafe extern "C" fn($($ty),*) $(-> $ret)?,
                            >(p)
                        }
                    },)*
                })
            }
        }

        $(
            // The trampoline's signature is the one virt::sys declares,
            // or this does not compile.
            const _: unsafe extern "C" fn($($ty),*) $(-> $ret)? = virt::sys::$name;

            /// Trampoline to libvirt's function of the same name.
            ///
            /// # Safety
            /// libvirt's contract for this function; [`load`] has succeeded.
            #[no_mangle]
            #[allow(non_snake_case)]
            unsafe extern "C" fn $name($($arg: $ty),*) $(-> $ret)? {
                // SAFETY: the caller keeps libvirt's contract for these
                // arguments, and the pointer is libvirt's own function.
                unsafe { (api().$name)($($arg),*) }
            }
        )*
    };
}

// Exactly the functions `virt` calls for the agent: `nm -D` on a build that
// links libvirt normally lists them. One missing here makes the linker take
// it from libvirt.so.0 again, which tests/cli.rs catches.
libvirt_api! {
    fn virConnectClose(conn: virConnectPtr) -> c_int;
    fn virConnectGetDomainCapabilities(
        conn: virConnectPtr,
        emulatorbin: *const c_char,
        arch: *const c_char,
        machine: *const c_char,
        virttype: *const c_char,
        flags: c_uint
    ) -> *mut c_char;
    fn virConnectOpen(name: *const c_char) -> virConnectPtr;
    fn virDomainAbortJob(dom: virDomainPtr) -> c_int;
    fn virDomainCreate(domain: virDomainPtr) -> c_int;
    fn virDomainDefineXML(conn: virConnectPtr, xml: *const c_char) -> virDomainPtr;
    fn virDomainDestroy(domain: virDomainPtr) -> c_int;
    fn virDomainFree(domain: virDomainPtr) -> c_int;
    fn virDomainGetAutostart(domain: virDomainPtr, autostart: *mut c_int) -> c_int;
    fn virDomainGetBlockInfo(
        dom: virDomainPtr,
        disk: *const c_char,
        info: virDomainBlockInfoPtr,
        flags: c_uint
    ) -> c_int;
    fn virDomainGetJobStats(
        domain: virDomainPtr,
        type_: *mut c_int,
        params: *mut virTypedParameterPtr,
        nparams: *mut c_int,
        flags: c_uint
    ) -> c_int;
    fn virDomainGetName(domain: virDomainPtr) -> *const c_char;
    fn virDomainGetState(
        domain: virDomainPtr,
        state: *mut c_int,
        reason: *mut c_int,
        flags: c_uint
    ) -> c_int;
    fn virDomainGetXMLDesc(domain: virDomainPtr, flags: c_uint) -> *mut c_char;
    fn virDomainLookupByName(conn: virConnectPtr, name: *const c_char) -> virDomainPtr;
    fn virDomainMigrateSetMaxDowntime(
        domain: virDomainPtr,
        downtime: c_ulonglong,
        flags: c_uint
    ) -> c_int;
    fn virDomainMigrateStartPostCopy(domain: virDomainPtr, flags: c_uint) -> c_int;
    fn virDomainMigrateToURI3(
        domain: virDomainPtr,
        dconnuri: *const c_char,
        params: virTypedParameterPtr,
        nparams: c_uint,
        flags: c_uint
    ) -> c_int;
    fn virDomainSetAutostart(domain: virDomainPtr, autostart: c_int) -> c_int;
    fn virDomainShutdown(domain: virDomainPtr) -> c_int;
    fn virGetLastError() -> virErrorPtr;
    fn virInterfaceFree(iface: virInterfacePtr) -> c_int;
    fn virInterfaceIsActive(iface: virInterfacePtr) -> c_int;
    fn virInterfaceLookupByName(conn: virConnectPtr, name: *const c_char) -> virInterfacePtr;
    fn virNetworkCreate(network: virNetworkPtr) -> c_int;
    fn virNetworkFree(network: virNetworkPtr) -> c_int;
    fn virNetworkIsActive(net: virNetworkPtr) -> c_int;
    fn virNetworkLookupByName(conn: virConnectPtr, name: *const c_char) -> virNetworkPtr;
    fn virNodeGetMemoryStats(
        conn: virConnectPtr,
        cellNum: c_int,
        params: virNodeMemoryStatsPtr,
        nparams: *mut c_int,
        flags: c_uint
    ) -> c_int;
    fn virSetErrorFunc(user_data: *mut c_void, handler: virErrorFunc);
    fn virStoragePoolCreate(pool: virStoragePoolPtr, flags: c_uint) -> c_int;
    fn virStoragePoolFree(pool: virStoragePoolPtr) -> c_int;
    fn virStoragePoolIsActive(pool: virStoragePoolPtr) -> c_int;
    fn virStoragePoolLookupByName(conn: virConnectPtr, name: *const c_char) -> virStoragePoolPtr;
    fn virTypedParamsFree(params: virTypedParameterPtr, nparams: c_int);
    fn virTypedParamsGetInt(
        params: virTypedParameterPtr,
        nparams: c_int,
        name: *const c_char,
        value: *mut c_int
    ) -> c_int;
    fn virTypedParamsGetULLong(
        params: virTypedParameterPtr,
        nparams: c_int,
        name: *const c_char,
        value: *mut c_ulonglong
    ) -> c_int;
}

static API: OnceLock<Result<Api, Error>> = OnceLock::new();

fn loaded() -> &'static Result<Api, Error> {
    API.get_or_init(|| {
        // RTLD_NOW: a libvirt.so.0 with unresolvable dependencies fails
        // here, as an error, not later inside a call. RTLD_LOCAL: its
        // symbols stay out of the global scope, where they would not
        // override this binary's trampolines anyway.
        // SAFETY: dlopen with a NUL-terminated name; the handle is never
        // closed, so the functions found in it stay valid.
        let lib = unsafe { libc::dlopen(LIBVIRT.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if lib.is_null() {
            return Err(Error::Open(dl_error()));
        }
        Api::find(lib)
    })
}

/// Proof that libvirt.so.0 is loaded and every function `virt` may call
/// was found. It is the only way to open a connection, and every `virt`
/// call goes through a connection: no trampoline can run before the load.
#[derive(Debug, Clone, Copy)]
pub struct Loaded(());

/// Loads libvirt.so.0 and finds every function `virt` may call.
pub fn load() -> Result<Loaded, &'static Error> {
    loaded().as_ref().map(|_| Loaded(()))
}

impl Loaded {
    /// A connection to `uri` (it may block: callers bound it).
    pub fn open(self, uri: &str) -> Result<Connect, virt::error::Error> {
        // Without this, libvirt prints every error to stderr by itself, in
        // addition to returning it (virt 0.5 docs, `clear_error_callback`).
        virt::error::clear_error_callback();
        Connect::open(Some(uri))
    }
}

fn api() -> &'static Api {
    match loaded() {
        Ok(api) => api,
        // Unreachable: every `virt` call happens on a connection, and a
        // connection is opened only through a `Loaded`. A trampoline
        // cannot return an error to a caller that expects libvirt's.
        Err(e) => {
            eprintln!("ocf-exit-reason:{e}");
            std::process::abort()
        }
    }
}
