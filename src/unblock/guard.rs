//! Stack overflow in a handler: one logged failure, not a dead worker, and
//! never a write into another coroutine's stack.
//!
//! Each coroutine stack (`GuardedStack`) has GUARD bytes of PROT_NONE
//! below it: more than the largest C frame CPython, glibc or nginx make (CPython
//! is built without -fstack-clash-protection, so a frame larger than the
//! guard could step over it into a neighbouring mapping — another
//! coroutine's stack). Touching the guard raises SIGSEGV; our handler (on an
//! alternate signal stack) checks that the fault is in the running
//! coroutine's guard and, if so, jumps straight back to `resume` on nginx's
//! stack with OVERFLOW. The coroutine is then abandoned: its stack and
//! Python thread state stay mapped forever (its frames may still be
//! referenced), what it registered is withdrawn, its request fails, and the
//! worker finishes its other requests and exits (`retire_worker`) — the jump
//! may have left malloc, pymalloc, nginx's timer tree or a RefCell
//! half-updated, so the worker must not go on taking new work.
//! Any other fault goes to the previous handler (normally the default: a
//! core dump; under AddressSanitizer, its report), exactly as without us.

#![deny(unsafe_op_in_unsafe_fn)]

use std::cell::Cell;
use std::os::raw::c_void;
use std::sync::Once;

use context::stack::Stack;

use super::coroutine;

/// `Transfer::data` of a jump out of an overflowed coroutine.
const OVERFLOW: usize = usize::MAX;
/// PROT_NONE below each stack: address space only, no memory. Larger than
/// the largest stack frame of CPython 3.x, nginx and glibc (whose alloca
/// users stop at 64 KiB, __MAX_ALLOCA_CUTOFF), with room to spare.
pub const GUARD: usize = 256 * 1024;
const ALT_STACK: usize = 64 * 1024;

thread_local! {
    /// Lowest usable address of the running coroutine's stack (0: none).
    static BOTTOM: Cell<usize> = const { Cell::new(0) };
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// A coroutine's C stack: `len()` usable bytes above GUARD bytes of
/// PROT_NONE, in one private mapping that this value owns (unmapped on
/// drop, or deliberately never: `leak`).
pub struct GuardedStack {
    base: *mut c_void,
    total: usize,
    stack: Stack,
}

impl GuardedStack {
    pub fn new(size: usize) -> Result<GuardedStack, String> {
        let page = page_size();
        let usable = size.max(Stack::min_size()).div_ceil(page) * page;
        let total = usable + GUARD;
        // SAFETY: a fresh anonymous mapping that nobody else knows of; the
        // part above the guard is made writable before it is used.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(format!("cannot map a {size}-byte stack: {}", std::io::Error::last_os_error()));
            }
            let bottom = (base as *mut u8).add(GUARD) as *mut c_void;
            if libc::mprotect(bottom, usable, libc::PROT_READ | libc::PROT_WRITE) != 0 {
                let e = std::io::Error::last_os_error();
                libc::munmap(base, total);
                return Err(format!("cannot map a {size}-byte stack: {e}"));
            }
            let top = (bottom as *mut u8).add(usable) as *mut c_void;
            Ok(GuardedStack { base, total, stack: Stack::new(top, bottom) })
        }
    }

    /// What `context::Context::new` runs on.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    pub fn bottom(&self) -> usize {
        self.stack.bottom() as usize
    }

    pub fn len(&self) -> usize {
        self.stack.len()
    }

    /// After an overflow: the mapping stays as it is for the rest of the
    /// process (an abandoned thread state's C frame pointers and anything
    /// registered from this stack may still point into it).
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for GuardedStack {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's since `new`; the coroutine that
        // ran on it has finished (an abandoned one's stack is leaked instead).
        unsafe { libc::munmap(self.base, self.total) };
    }
}

static INSTALL: Once = Once::new();
/// The handlers we replaced (SIGSEGV, SIGBUS): written once by `install`,
/// read by `on_fault` to hand on faults that are not ours.
// SAFETY: an all-zero sigaction is a valid value (SIG_DFL, no flags).
static mut PREVIOUS: [libc::sigaction; 2] = unsafe { std::mem::zeroed() };

pub fn install() {
    // SAFETY: process-wide signal setup, once, on the worker's only thread,
    // before any coroutine runs; the alternate stack is never unmapped and
    // PREVIOUS is written only here (read by `on_fault` afterwards).
    INSTALL.call_once(|| unsafe {
        let alt = libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANON,
            -1,
            0,
        );
        if alt == libc::MAP_FAILED {
            return;
        }
        let ss = libc::stack_t { ss_sp: alt, ss_flags: 0, ss_size: ALT_STACK };
        if libc::sigaltstack(&ss, std::ptr::null_mut()) != 0 {
            return;
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_fault as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
        libc::sigemptyset(&mut sa.sa_mask);
        let previous = &raw mut PREVIOUS;
        libc::sigaction(libc::SIGSEGV, &sa, &mut (*previous)[0]);
        libc::sigaction(libc::SIGBUS, &sa, &mut (*previous)[1]);
    });
}

/// Marks the stack about to run; returns what to restore with `leave`.
pub fn enter(bottom: usize) -> usize {
    BOTTOM.replace(bottom)
}

pub fn leave(prev: usize) {
    BOTTOM.set(prev);
}

pub fn overflowed(transfer_data: usize) -> bool {
    transfer_data == OVERFLOW
}

/// After an overflow: this worker finishes what it is doing and exits, as
/// on `nginx -s quit` (listening sockets closed at once, idle keep-alive
/// connections closed, in-flight requests served). nginx's master then
/// starts a fresh worker: `ngx_reap_children` respawns a worker that exits
/// while its `respawn` flag is set and the master did not ask it to exit
/// (`exiting` unset, no quit/terminate in the master) — true for a worker
/// that quits on its own. Not in `master_process off` mode, where the
/// process is the whole server.
pub fn retire_worker() {
    // SAFETY: plain reads/writes of nginx's process globals on the worker's
    // only thread; the cycle loop reads ngx_quit after this event handler.
    unsafe {
        if crate::ffi::ngx_process == crate::ffi::NGX_PROCESS_WORKER as crate::ffi::ngx_uint_t {
            crate::ffi::ngx_quit = 1;
        }
    }
}

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, _uc: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo. Only thread-local reads
    // and a context jump; the jump leaves the signal frame behind on the
    // alternate stack, which is fine since SA_NODEFER kept the signal
    // unblocked. `caller` is where the running coroutine's `resume` waits
    // on nginx's stack, owned by that coroutine until it is taken here.
    unsafe {
        let addr = (*info).si_addr() as usize;
        let bottom = BOTTOM.get();
        if bottom != 0 && addr < bottom && addr >= bottom - GUARD {
            if let Some(caller) = coroutine::caller_of_current() {
                caller.resume(OVERFLOW);
            }
        }
        // Not ours: put the previous handler back and let the fault recur.
        let previous = &raw const PREVIOUS;
        let idx = if sig == libc::SIGSEGV { 0 } else { 1 };
        libc::sigaction(sig, &(*previous)[idx], std::ptr::null_mut());
    }
}
