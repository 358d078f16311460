//! Coroutines: a handler on its own C stack, resumable from nginx events.
//!
//! Ownership: a `Coroutine` is boxed and owned by the executor from `spawn`
//! until it finishes (or is abandoned after a stack overflow); callers hold
//! a `Handle` (a raw pointer that is valid while `is_live`). Its stack goes
//! back to the per-worker pool when it finishes; its thread state is
//! recycled. After an overflow both are leaked instead (see `guard`).
//!
//! Switching: `resume` (nginx's stack) jumps into the coroutine; `suspend`
//! (the coroutine's stack) jumps back. Around each resume the coroutine's
//! thread state is made current and `CURRENT` names it.

#![deny(unsafe_op_in_unsafe_fn)]

use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::HashMap;
use std::ptr;

use context::{Context, Transfer};

use super::guard::{self, GuardedStack};
use super::recycle::Recycler;
use super::tstate::{self, ThreadState};
use super::wait;

/// Why a suspended coroutine was resumed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wake {
    /// What it waited for happened.
    Ready,
    /// Its timer expired first.
    Timeout,
    /// Its request/session ended or the worker is exiting: unwind now.
    Cancelled,
}

pub struct Coroutine {
    /// Where to resume it (while suspended).
    context: Option<Context>,
    /// Where to return to when it suspends or finishes (while running).
    caller: Option<Context>,
    stack: Option<GuardedStack>,
    tstate: Option<ThreadState>,
    task: Option<Box<dyn FnOnce()>>,
    /// Run on nginx's stack when a coroutine that suspended finishes (one
    /// that finishes without ever suspending reports to `spawn`'s caller).
    on_done: Option<Box<dyn FnOnce()>>,
    suspended_once: bool,
    wake: Wake,
    pub cancelled: bool,
    finished: bool,
    overflowed: bool,
    generation: u64,
    /// Run when the coroutine is released (see `Handle::defer`), last first.
    deferred: Vec<Box<dyn FnOnce()>>,
    /// What a wait registered from this stack right now (see `Handle::arm`).
    armed: Option<Armed>,
    /// What the coroutine's owner attaches (e.g. the resolver to use).
    pub env: Env,
}

pub use crate::executor::Env;

/// A registration made from a coroutine's own stack for the duration of one
/// wait (a timer event, a resolver query living in the waiting function's
/// frame) and how to withdraw it: `withdraw(data)`.
#[derive(Clone, Copy)]
pub struct Armed {
    pub withdraw: unsafe fn(*mut std::os::raw::c_void),
    pub data: *mut std::os::raw::c_void,
}

/// A reference to a coroutine: its address and its generation, so a handle
/// kept past its coroutine's end never reaches a newer coroutine that
/// happens to reuse the address.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Handle(*mut Coroutine, u64);

thread_local! {
    static CURRENT: Cell<*mut Coroutine> = const { Cell::new(ptr::null_mut()) };
    /// Live coroutines: address -> generation. Not a RefCell: it is read
    /// on coroutine stacks (`defer`), and a stack overflow jumping out of a
    /// `borrow()` would leave the RefCell borrowed for good (every later
    /// `borrow_mut` panicking). See `live_generation`.
    static LIVE: UnsafeCell<HashMap<usize, u64>> = UnsafeCell::new(HashMap::new());
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    /// Used only on nginx's stack (`spawn`, `release`).
    static STACKS: RefCell<Recycler<GuardedStack>> = const { RefCell::new(Recycler::new(POOLED_STACKS, true)) };
    static STACK_SIZE: Cell<usize> = const { Cell::new(DEFAULT_STACK_SIZE) };
    /// Set by `shutdown_all`: the worker process is exiting now.
    static SHUTTING_DOWN: Cell<bool> = const { Cell::new(false) };
}

/// Whether the worker is in its final exit (`shutdown_all`), as opposed to
/// draining in-flight work during a graceful quit (`ngx_exiting`).
pub fn shutting_down() -> bool {
    SHUTTING_DOWN.get()
}

/// The generation of the live coroutine at `addr`, if any.
fn live_generation(addr: usize) -> Option<u64> {
    // SAFETY: the worker's only thread; no reference to the map escapes and
    // `get` calls nothing that could re-enter LIVE. A jump out of this read
    // (an overflow) leaves the map as it was.
    LIVE.with(|l| unsafe { (*l.get()).get(&addr).copied() })
}

/// Adds or (with None) removes a live coroutine. Only on nginx's stack.
fn set_live(addr: usize, generation: Option<u64>) {
    // SAFETY: as in `live_generation`; insert/remove call nothing that
    // could re-enter LIVE, and never run on a coroutine stack.
    LIVE.with(|l| unsafe {
        match generation {
            Some(g) => (*l.get()).insert(addr, g),
            None => (*l.get()).remove(&addr),
        }
    });
}

fn live_list() -> Vec<(usize, u64)> {
    // SAFETY: as in `live_generation` (a copy is made; nothing re-enters).
    LIVE.with(|l| unsafe { (*l.get()).iter().map(|(&c, &g)| (c, g)).collect() })
}

/// Default C stack per suspended handler; see README "python_stack_size".
/// CPython 3.13 lets C code recurse 10,000 levels (deep repr/json need
/// about 2 MiB) before RecursionError: its default is 4 MiB.
pub const DEFAULT_STACK_SIZE: usize = if cfg!(Py_3_13) { 4 } else { 1 } * 1024 * 1024;
/// Stacks kept for reuse per worker while it is idle (more while busy:
/// as many as were in use at once, see `recycle`).
const POOLED_STACKS: usize = 64;

pub fn set_stack_size(size: usize) {
    STACK_SIZE.set(size);
}

/// The coroutine running now, if any.
pub fn current() -> Option<Handle> {
    let c = CURRENT.get();
    // SAFETY: CURRENT names a live coroutine while it runs (set and reset
    // by `resume`, which owns the switch).
    (!c.is_null()).then(|| Handle(c, unsafe { (*c).generation }))
}

fn take_stack() -> Result<GuardedStack, String> {
    let size = STACK_SIZE.get();
    if let Some(s) = STACKS.with_borrow_mut(|p| p.take()) {
        if s.len() >= size {
            return Ok(s);
        }
    }
    GuardedStack::new(size).inspect_err(|_| STACKS.with_borrow_mut(|p| p.lost()))
}

fn give_back_stack(s: GuardedStack) {
    STACKS.with_borrow_mut(|p| p.give_back(s));
}

/// Runs `task` as a new coroutine until it finishes or first suspends.
/// Returns None when it finished, else its handle; `on_done` runs (on
/// nginx's stack) when a suspended coroutine later finishes uncancelled.
pub fn spawn(task: Box<dyn FnOnce()>, on_done: Box<dyn FnOnce()>, env: Env) -> Result<Option<Handle>, String> {
    let stack = take_stack()?;
    guard::install();
    // SAFETY: the stack is moved into the coroutine below, which owns it
    // until it finishes (then the pool does) or overflows (then it is
    // leaked, never unmapped); `entry` never returns (it jumps back to the
    // caller when done).
    let context = unsafe { Context::new(stack.stack(), entry) };
    let co = Box::into_raw(Box::new(Coroutine {
        context: Some(context),
        caller: None,
        stack: Some(stack),
        tstate: Some(ThreadState::new()),
        task: Some(task),
        on_done: Some(on_done),
        suspended_once: false,
        wake: Wake::Ready,
        cancelled: false,
        finished: false,
        overflowed: false,
        generation: 0,
        deferred: Vec::new(),
        armed: None,
        env,
    }));
    let generation = GENERATION.get() + 1;
    GENERATION.set(generation);
    // SAFETY: just allocated above, owned here until it is made live.
    unsafe { (*co).generation = generation };
    set_live(co as usize, Some(generation));
    let h = Handle(co, generation);
    h.resume(Wake::Ready);
    Ok(h.is_live().then_some(h))
}

extern "C" fn entry(t: Transfer) -> ! {
    let co = t.data as *mut Coroutine;
    // SAFETY: `resume` passed its live coroutine, which stays allocated
    // until `release` (after this function's last jump); we run on its
    // stack and no one else touches it while we run.
    unsafe {
        (*co).caller = Some(t.context);
        if let Some(task) = (*co).task.take() {
            // A panic must not unwind across the context switch: logged,
            // and the task leaves no result (its phase fails, as after an
            // overflow).
            crate::panic_guard::guard((*co).env.log, "a handler", || tstate::isolated(task), || ());
        }
        (*co).finished = true;
        let caller = (*co).caller.take().expect("a running coroutine has a caller");
        caller.resume(0);
    }
    unreachable!("a finished coroutine is never resumed");
}

impl Handle {
    pub(super) fn raw(self) -> *mut Coroutine {
        self.0
    }
    /// The handle of the coroutine now at `p` (for event data that lives
    /// only while its coroutine waits).
    pub(super) fn wrap(p: *mut Coroutine) -> Handle {
        Handle(p, live_generation(p as usize).unwrap_or(0))
    }

    pub fn is_live(self) -> bool {
        live_generation(self.0 as usize) == Some(self.1)
    }

    /// The coroutine itself. Callers use it only while it is live (checked
    /// with `is_live`), on the worker's one thread, and keep no reference
    /// across a switch — the other side may then use it.
    fn co<'a>(self) -> &'a mut Coroutine {
        // SAFETY: the box is owned by the executor from `spawn` to
        // `release`, which first removes it from LIVE; callers checked
        // `is_live` and use the reference on this thread only, not across a
        // switch.
        unsafe { &mut *self.0 }
    }

    pub fn env(self) -> Env {
        self.co().env
    }

    /// A number no other coroutine of this worker has had: the handler's
    /// identity (e.g. who owns a lock), never reused.
    pub fn id(self) -> u64 {
        self.1
    }

    /// Runs `f` on nginx's stack when this coroutine is released — it
    /// finished, was cancelled, or was abandoned after a stack overflow —
    /// before its `on_done`. Whatever a wait registered on the coroutine's
    /// behalf (a timer, a resolver query, an nginx connection for a socket)
    /// is withdrawn here at the latest, so nothing outlives its owner.
    pub fn defer(self, f: Box<dyn FnOnce()>) {
        if self.is_live() {
            self.co().deferred.push(f);
        }
    }

    /// Called by the running coroutine around a wait: `Some` right before
    /// it registers something that lives in its own frame, `None` right
    /// after withdrawing it. An overflow in between (inside nginx's timer
    /// or resolver code, or on the way to and from the switch) abandons the
    /// coroutine with the registration in place: release withdraws it then.
    /// A slot, not `defer`: a handler may wait millions of times.
    pub fn arm(self, armed: Option<Armed>) {
        if self.is_live() {
            self.co().armed = armed;
        }
    }

    /// `resume` from an event handler of the coroutine's own (its timer,
    /// socket, lookup, lock), then the owner's `Env::after_event`. Not for
    /// cancellation, which runs inside the owner's own teardown.
    pub fn resume_from_event(self, wake: Wake) {
        if !self.is_live() {
            return;
        }
        let after = self.co().env.after_event;
        self.resume(wake);
        if let Some(a) = after {
            // SAFETY: the owner's contract for its `after_event` (see Env):
            // `data` stays valid for the worker's life.
            unsafe { (a.run)(a.data) };
        }
    }

    /// Resumes a coroutine suspended by `suspend_current`.
    pub fn wake(self) {
        self.resume(Wake::Ready);
    }

    pub fn cancelled(self) -> bool {
        self.co().cancelled
    }

    /// Continues a suspended coroutine (from nginx's stack) until it
    /// suspends again or finishes; a finished one is released here.
    pub fn resume(self, wake: Wake) {
        if !self.is_live() {
            return;
        }
        let co = self.co();
        let Some(context) = co.context.take() else { return }; // running now
        co.wake = wake;
        let prev_current = CURRENT.replace(self.0);
        // An overflow can jump out of a `nonsuspending` section (python_set
        // evaluated by the handler): its depth must not stay raised.
        let no_suspend = wait::no_suspend_depth();
        let prev_ts = co.tstate.as_ref().expect("live coroutine has a thread state").enter();
        let stack = co.stack.as_ref().expect("live coroutine has a stack");
        let prev_guard = guard::enter(stack.bottom());
        // SAFETY: `context` is where the coroutine last suspended (or its
        // start), on the stack it owns; it returns here when it suspends,
        // finishes or overflows. `co` is not used across the switch.
        let t = unsafe { context.resume(self.0 as usize) };
        wait::set_no_suspend_depth(no_suspend);
        guard::leave(prev_guard);
        tstate::restore(prev_ts);
        CURRENT.set(prev_current);
        let co = self.co();
        if guard::overflowed(t.data) {
            co.overflowed = true;
        } else if !co.finished {
            co.context = Some(t.context);
            return;
        }
        self.release();
    }

    /// Cancels: the waiting call raises in the handler, which then runs to
    /// its end (its `finally` blocks) without waiting again; `on_done` is
    /// not called.
    pub fn cancel(self) {
        if !self.is_live() {
            return;
        }
        self.co().cancelled = true;
        self.co().on_done = None;
        self.resume(Wake::Cancelled);
    }

    fn release(self) {
        set_live(self.0 as usize, None);
        // SAFETY: allocated by `spawn` with Box::into_raw and removed from
        // LIVE just now: no handle reaches it any more, this is its owner.
        let mut co = unsafe { Box::from_raw(self.0) };
        let on_done = co.on_done.take().filter(|_| co.suspended_once);
        while let Some(f) = co.deferred.pop() {
            f();
        }
        if co.overflowed {
            let size = co.stack.as_ref().map_or(0, |s| s.len());
            let msg = format!(
                "python: the handler overflowed its {size}-byte C stack and was abandoned (raise python_stack_size); \
                 this worker finishes its other requests and exits, nginx starts a new one"
            );
            // SAFETY: the env's log outlives the coroutine (it is the log
            // of the request or session, which the owner ends after this).
            unsafe { crate::ffi::log_error(crate::ffi::NGX_LOG_ERR as usize, co.env.log, msg.as_bytes()) };
            // Its frames may be half-updated: never clear or reuse them, and
            // keep the C stack they (and anything registered from it) point
            // into mapped for good.
            if let Some(ts) = co.tstate.take() {
                ts.abandon();
            }
            if let Some(a) = co.armed.take() {
                // SAFETY: `arm`'s caller registered `data` (in the leaked,
                // still mapped stack) with a `withdraw` that takes it.
                unsafe { (a.withdraw)(a.data) };
            }
            if let Some(s) = co.stack.take() {
                s.leak();
                STACKS.with_borrow_mut(|p| p.lost());
            }
            guard::retire_worker();
        } else {
            if let Some(s) = co.stack.take() {
                log_stack_use(&s, co.env.log);
                give_back_stack(s);
            }
            if let Some(ts) = co.tstate.take() {
                ts.recycle();
            }
        }
        drop(co);
        if let Some(f) = on_done {
            f();
        }
    }
}

/// With `error_log ... debug`: how deep this stack has ever been used (the
/// lowest byte no longer zero since the kernel handed out the mapping), to
/// size `python_stack_size`. A scan of the whole stack, so debug only.
fn log_stack_use(s: &GuardedStack, log: *mut crate::ffi::ngx_log_t) {
    // SAFETY: the log outlives the coroutine; the stack is ours (the
    // coroutine has finished, the pool has not got it yet) and mapped from
    // bottom() for len() bytes.
    unsafe {
        if log.is_null() || (*log).log_level < crate::ffi::NGX_LOG_DEBUG as usize {
            return;
        }
        let bottom = s.bottom() as *const usize;
        let words = s.len() / std::mem::size_of::<usize>();
        let untouched = (0..words).take_while(|&i| *bottom.add(i) == 0).count();
        let used = s.len() - untouched * std::mem::size_of::<usize>();
        let msg = format!("python: stack high-water mark {used} of {} bytes", s.len());
        crate::ffi::log_error(crate::ffi::NGX_LOG_DEBUG as usize, log, msg.as_bytes());
    }
}

/// From inside a coroutine: gives control back to nginx until resumed.
/// Returns why it was resumed. Cancelled coroutines do not wait.
pub fn suspend() -> Wake {
    let Some(h) = current() else { return Wake::Cancelled };
    let co = h.co();
    if co.cancelled {
        return Wake::Cancelled;
    }
    let caller = co.caller.take().expect("a running coroutine has a caller");
    co.suspended_once = true;
    // SAFETY: jumps back into `resume` on nginx's stack, which owns the
    // switch; it comes back here when resumed. `co` is not used across it.
    let t = unsafe { caller.resume(0) };
    let co = h.co();
    co.caller = Some(t.context);
    if co.cancelled {
        Wake::Cancelled
    } else {
        co.wake
    }
}

/// Worker exit: every live coroutine unwinds (its `finally` blocks run) and
/// then its `on_done` runs, so its owner ends the request or session.
pub fn shutdown_all() {
    SHUTTING_DOWN.set(true);
    for (c, g) in live_list() {
        let h = Handle(c as *mut Coroutine, g);
        if h.is_live() {
            h.co().cancelled = true;
            h.resume(Wake::Cancelled);
        }
    }
}

/// Overflow: the signal handler jumps back to `resume` with this context.
pub(super) fn caller_of_current() -> Option<Context> {
    current().and_then(|h| h.co().caller.take())
}
