//! Stack overflow in a handler: a clean, logged failure, not a dead worker.
//!
//! Each coroutine stack has a PROT_NONE guard page below it. Touching it
//! raises SIGSEGV; our handler (on an alternate signal stack) checks that
//! the fault is in the running coroutine's guard page and, if so, jumps
//! straight back to `resume` on nginx's stack with OVERFLOW. The coroutine
//! is then abandoned (its stack and Python thread state are never reused)
//! and its request fails. Any other fault goes to the previous handler
//! (normally the default: a core dump), exactly as without this module.

use std::cell::Cell;
use std::sync::Once;

use super::coroutine;

/// `Transfer::data` of a jump out of an overflowed coroutine.
const OVERFLOW: usize = usize::MAX;
/// How far below the stack a fault still counts as overflow: a frame larger
/// than a page may skip the guard page itself.
const REACH: usize = 64 * 1024;
const ALT_STACK: usize = 64 * 1024;

thread_local! {
    /// Lowest usable address of the running coroutine's stack (0: none).
    static BOTTOM: Cell<usize> = const { Cell::new(0) };
}

static INSTALL: Once = Once::new();
static mut PREVIOUS: [libc::sigaction; 2] = unsafe { std::mem::zeroed() };

pub fn install() {
    INSTALL.call_once(|| unsafe {
        // SAFETY: process-wide signal setup, once, before any coroutine runs.
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

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, _uc: *mut libc::c_void) {
    // SAFETY: only thread-local reads and a context jump; the jump leaves
    // the signal frame behind on the alternate stack, which is fine since
    // SA_NODEFER kept the signal unblocked.
    unsafe {
        let addr = (*info).si_addr() as usize;
        let bottom = BOTTOM.get();
        if bottom != 0 && addr < bottom && addr >= bottom.saturating_sub(REACH) {
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
