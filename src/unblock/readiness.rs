//! Waiting for several fds at once (select/poll/epoll, `ngx.wait_fd`) on
//! nginx's event loop, for fds that may belong to anyone — a C driver's
//! private socket, a cooperative socket already leased to nginx, an epoll
//! instance of Python's: the fds go into a private epoll instance, and only
//! that instance is registered with nginx (one connection for the time of
//! the wait). It becomes readable when any of the fds is ready.

use std::time::Instant;

use super::coroutine::{self, Handle, Wake};
use super::wait::remaining_ms;
use crate::ffi::{self, ngx_event_t};

/// poll(2) with a zero timeout: fills `revents`, returns how many are ready.
pub fn poll_now(fds: &mut [libc::pollfd]) -> std::io::Result<usize> {
    // SAFETY: `fds` is a valid array of pollfd for its length.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// poll(2) that really blocks (configuration time, python_set/python_log)
/// until `deadline` (None: no limit); EINTR retried.
pub fn poll_blocking(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> std::io::Result<usize> {
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => remaining_ms(d).map_or(0, |m| m.min(i32::MAX as usize) as i32),
        };
        // SAFETY: as in `poll_now`.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

unsafe extern "C" fn set_ready(ev: *mut ngx_event_t) {
    crate::panic_guard::guard((*ev).log, "a descriptor wait", || set_ready_unguarded(ev), || ())
}

unsafe fn set_ready_unguarded(ev: *mut ngx_event_t) {
    let c = (*ev).data as *mut ffi::ngx_connection_t;
    Handle::from_raw((*c).data).resume_from_event(if (*ev).timedout() != 0 { Wake::Timeout } else { Wake::Ready });
}

/// A private epoll instance holding the fds, registered with nginx.
struct Watch {
    epfd: i32,
    conn: *mut ffi::ngx_connection_t,
}

impl Watch {
    fn new(h: Handle, fds: &[libc::pollfd]) -> std::io::Result<Watch> {
        // SAFETY: plain syscalls on fds we create and own (epfd) or only
        // register (the caller's fds, which stay open during the wait).
        unsafe {
            let epfd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if epfd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut w = Watch { epfd, conn: std::ptr::null_mut() };
            for p in fds {
                let mut events = 0u32;
                if p.events & libc::POLLIN != 0 {
                    events |= libc::EPOLLIN as u32;
                }
                if p.events & libc::POLLOUT != 0 {
                    events |= libc::EPOLLOUT as u32;
                }
                if p.events & libc::POLLPRI != 0 {
                    events |= libc::EPOLLPRI as u32;
                }
                let mut e = libc::epoll_event { events, u64: p.fd as u64 };
                if libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, p.fd, &mut e) < 0 {
                    let err = std::io::Error::last_os_error();
                    // The same fd twice: once is enough (poll allows it).
                    if err.raw_os_error() != Some(libc::EEXIST) {
                        return Err(err);
                    }
                }
            }
            let log = h.env().log;
            let log = if log.is_null() { (*ffi::ngx_cycle).log } else { log };
            let c = ffi::ngx_get_connection(epfd, log);
            if c.is_null() {
                return Err(std::io::Error::other("no free nginx connection (worker_connections)"));
            }
            w.conn = c;
            (*c).data = h.as_raw();
            (*c).log = log;
            (*(*c).read).handler = Some(set_ready);
            (*(*c).read).log = log;
            (*(*c).write).log = log;
            Ok(w)
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SAFETY: the connection and epfd are ours (made in `new`).
        unsafe {
            if !self.conn.is_null() {
                ffi::ngx_python_close_events(self.conn, 1);
                ffi::ngx_free_connection(self.conn);
                (*self.conn).fd = -1;
            }
            libc::close(self.epfd);
        }
    }
}

/// What a wait for several fds ended with.
pub enum Ended {
    /// Some fds have `revents`, or none and the deadline passed.
    Ready,
    Cancelled,
}

/// Suspends `h` (the running coroutine) until one of `fds` is ready (their
/// `revents` filled as poll(2) does) or `deadline` (monotonic) passes.
pub fn wait(h: Handle, fds: &mut [libc::pollfd], deadline: Option<Instant>) -> std::io::Result<Ended> {
    let n = poll_now(fds)?;
    if n > 0 || deadline.is_some_and(|d| remaining_ms(d).is_none()) {
        return Ok(Ended::Ready);
    }
    let watch = Watch::new(h, fds)?;
    // SAFETY: the connection is ours until `watch` drops, after the wait.
    let rev = unsafe { (*watch.conn).read };
    loop {
        let left = match deadline {
            None => None,
            Some(d) => match remaining_ms(d) {
                Some(ms) => Some(ms),
                None => {
                    poll_now(fds)?;
                    return Ok(Ended::Ready);
                }
            },
        };
        // SAFETY: `rev` belongs to the watch's connection (see above).
        let wake = unsafe {
            (*rev).set_ready(0);
            if ffi::ngx_handle_read_event(rev, 0) != ffi::OK {
                return Err(std::io::Error::other("cannot add an event to nginx's event loop"));
            }
            if let Some(ms) = left {
                ffi::ngx_python_add_timer(rev, ms);
            }
            let wake = coroutine::suspend();
            ffi::ngx_python_del_timer(rev);
            (*rev).set_timedout(0);
            wake
        };
        if wake == Wake::Cancelled {
            return Ok(Ended::Cancelled);
        }
        let n = poll_now(fds)?;
        if n > 0 {
            return Ok(Ended::Ready);
        }
        // Woken with nothing ready (an edge seen late, or the timer of a
        // lagging clock): wait again for what is left.
        // The epoll instance is edge-triggered in nginx: drain its state
        // so a later readiness is a new edge.
        drain(watch.epfd);
    }
}

fn drain(epfd: i32) {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 16];
    // SAFETY: a valid buffer of 16 events.
    unsafe { libc::epoll_wait(epfd, evs.as_mut_ptr(), evs.len() as i32, 0) };
}
