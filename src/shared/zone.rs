//! The data of one `python_shared_dict` zone, in nginx shared memory.
//!
//! Layout: the slab pool's `data` points to a `Header` (allocated from the
//! slab once, when the zone is first created; a reload that keeps the zone
//! keeps it). Entries are `Node`s, each one slab allocation holding its key
//! and value bytes after the fixed part; they are chained in hash buckets
//! and in one LRU list (most recently used first). Every worker maps the
//! zone at the same address (nginx maps it in the master before forking),
//! so plain pointers are valid in all of them.
//!
//! Locking: every operation runs under the slab pool's `ngx_shmtx_t`. No
//! Python code runs while it is held (values are copied in and out), and a
//! worker that dies holding it is unlocked by the master
//! (`ngx_unlock_mutexes` force-unlocks slab mutexes by pid).

use std::ptr;

use crate::ffi::{self, ngx_slab_pool_t};

/// A value as stored: its type tag and bytes.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(Vec<u8>),
    Bytes(Vec<u8>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Value {
    fn tag(&self) -> u8 {
        match self {
            Value::Str(_) => 0,
            Value::Bytes(_) => 1,
            Value::Int(_) => 2,
            Value::Float(_) => 3,
            Value::Bool(_) => 4,
        }
    }
    fn bytes(&self) -> Vec<u8> {
        match self {
            Value::Str(b) | Value::Bytes(b) => b.clone(),
            Value::Int(i) => i.to_le_bytes().to_vec(),
            Value::Float(f) => f.to_le_bytes().to_vec(),
            Value::Bool(b) => vec![*b as u8],
        }
    }
    fn decode(tag: u8, b: &[u8]) -> Value {
        let word = |b: &[u8]| <[u8; 8]>::try_from(b).unwrap_or([0; 8]);
        match tag {
            0 => Value::Str(b.to_vec()),
            1 => Value::Bytes(b.to_vec()),
            2 => Value::Int(i64::from_le_bytes(word(b))),
            3 => Value::Float(f64::from_le_bytes(word(b))),
            _ => Value::Bool(b.first() == Some(&1)),
        }
    }
}

/// LRU links; the first field of `Node`, and the list head in `Header`.
#[repr(C)]
struct Links {
    prev: *mut Links,
    next: *mut Links,
}

#[repr(C)]
struct Node {
    lru: Links,
    bucket_next: *mut Node,
    hash: u32,
    tag: u8,
    /// The key was given as str (keys() gives it back as str).
    key_is_str: u8,
    klen: u32,
    vlen: u32,
    /// Monotonic milliseconds; 0: never expires.
    expires: u64,
    // key bytes, then value bytes
}

#[repr(C)]
pub struct Header {
    lru: Links,
    buckets: *mut *mut Node,
    nbuckets: usize,
    count: usize,
}

/// Now, in monotonic milliseconds (the same clock in every worker).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

fn hash(key: &[u8]) -> u32 {
    // FNV-1a: short keys, no need for more.
    key.iter().fold(0x811c9dc5u32, |h, &b| (h ^ b as u32).wrapping_mul(0x01000193))
}

/// A key: its bytes and whether it was a str.
pub struct Key<'a> {
    pub bytes: &'a [u8],
    pub is_str: bool,
}

/// One locked session on a zone: every operation of the Python API is one
/// `Locked` from `lock` to drop.
pub struct Locked {
    pool: *mut ngx_slab_pool_t,
    h: *mut Header,
    now: u64,
}

/// Creates the header of a new zone. None when the zone is too small.
///
/// # Safety
/// `pool` is a freshly initialised slab pool of a zone being created
/// (nginx's zone init callback; no worker runs yet).
pub unsafe fn create(pool: *mut ngx_slab_pool_t) -> Option<*mut Header> {
    let size = (*pool).end.offset_from((*pool).start) as usize;
    // About one bucket per 512 bytes of zone.
    let nbuckets = (size / 512).max(16);
    let h = ffi::ngx_slab_calloc(pool, std::mem::size_of::<Header>()) as *mut Header;
    let buckets = ffi::ngx_slab_calloc(pool, nbuckets * std::mem::size_of::<*mut Node>()) as *mut *mut Node;
    if h.is_null() || buckets.is_null() {
        return None;
    }
    // A full zone is normal (we evict): no [crit] per failed allocation.
    (*pool).set_log_nomem(0);
    (*h).lru.prev = &mut (*h).lru;
    (*h).lru.next = &mut (*h).lru;
    (*h).buckets = buckets;
    (*h).nbuckets = nbuckets;
    Some(h)
}

impl Locked {
    /// # Safety
    /// `pool` / `h` belong to a live zone created by `create`.
    pub unsafe fn lock(pool: *mut ngx_slab_pool_t, h: *mut Header) -> Locked {
        ffi::ngx_shmtx_lock(&mut (*pool).mutex);
        Locked { pool, h, now: now_ms() }
    }

    fn bucket(&self, hash: u32) -> *mut *mut Node {
        // SAFETY: the header is live while locked; index in range.
        unsafe { (*self.h).buckets.add(hash as usize % (*self.h).nbuckets) }
    }

    fn key_of<'a>(n: *mut Node) -> &'a [u8] {
        // SAFETY: a live node's key bytes follow it.
        unsafe { std::slice::from_raw_parts((n as *const u8).add(std::mem::size_of::<Node>()), (*n).klen as usize) }
    }

    fn value_of(n: *mut Node) -> Value {
        // SAFETY: a live node's value bytes follow its key.
        unsafe {
            let p = (n as *const u8).add(std::mem::size_of::<Node>() + (*n).klen as usize);
            Value::decode((*n).tag, std::slice::from_raw_parts(p, (*n).vlen as usize))
        }
    }

    fn expired(&self, n: *mut Node) -> bool {
        // SAFETY: live node.
        let e = unsafe { (*n).expires };
        e != 0 && e <= self.now
    }

    /// The live node for `key` (an expired one is removed), made most recent.
    fn find(&mut self, key: &[u8]) -> *mut Node {
        let hv = hash(key);
        // SAFETY: bucket chains hold live nodes while locked.
        unsafe {
            let mut n = *self.bucket(hv);
            while !n.is_null() {
                if (*n).hash == hv && Self::key_of(n) == key {
                    if self.expired(n) {
                        self.remove(n);
                        return ptr::null_mut();
                    }
                    self.touch(n);
                    return n;
                }
                n = (*n).bucket_next;
            }
        }
        ptr::null_mut()
    }

    fn touch(&mut self, n: *mut Node) {
        // SAFETY: `n` is on the LRU list; the head is the header's.
        unsafe {
            unlink(&mut (*n).lru);
            push_front(&mut (*self.h).lru, &mut (*n).lru);
        }
    }

    /// Unlinks and frees a node.
    fn remove(&mut self, n: *mut Node) {
        // SAFETY: `n` is live and on its bucket chain and the LRU list.
        unsafe {
            let mut link = self.bucket((*n).hash);
            while *link != n {
                link = &mut (**link).bucket_next;
            }
            *link = (*n).bucket_next;
            unlink(&mut (*n).lru);
            (*self.h).count -= 1;
            ffi::ngx_slab_free_locked(self.pool, n as *mut std::os::raw::c_void);
        }
    }

    /// The least recently used node (null: empty).
    fn oldest(&self) -> *mut Node {
        // SAFETY: header live.
        unsafe {
            let last = (*self.h).lru.prev;
            if last == &mut (*self.h).lru as *mut Links { ptr::null_mut() } else { last as *mut Node }
        }
    }

    /// A slab allocation of `size`, evicting expired entries and then the
    /// least recently used until it fits. (pointer, evicted live entries?)
    fn alloc(&mut self, size: usize) -> (*mut Node, bool) {
        let mut forced = false;
        // Expired entries at the old end go first, without counting.
        for _ in 0..3 {
            let o = self.oldest();
            if o.is_null() || !self.expired(o) {
                break;
            }
            self.remove(o);
        }
        loop {
            // SAFETY: the pool is locked by us.
            let p = unsafe { ffi::ngx_slab_alloc_locked(self.pool, size) } as *mut Node;
            if !p.is_null() {
                return (p, forced);
            }
            let o = self.oldest();
            if o.is_null() {
                return (ptr::null_mut(), forced);
            }
            forced |= !self.expired(o);
            self.remove(o);
        }
    }

    /// Stores `value` under `key`; `ttl_ms` 0: never expires. Ok(forced):
    /// other live entries were evicted to make room. Err: does not fit.
    pub fn set(&mut self, key: &Key<'_>, value: &Value, ttl_ms: u64) -> Result<bool, ()> {
        let old = self.find(key.bytes);
        let vb = value.bytes();
        if !old.is_null() {
            // SAFETY: live node; same value size: rewrite in place.
            unsafe {
                if (*old).vlen as usize == vb.len() {
                    let p = (old as *mut u8).add(std::mem::size_of::<Node>() + (*old).klen as usize);
                    ptr::copy_nonoverlapping(vb.as_ptr(), p, vb.len());
                    (*old).tag = value.tag();
                    (*old).key_is_str = key.is_str as u8;
                    (*old).expires = self.deadline(ttl_ms);
                    return Ok(false);
                }
            }
            self.remove(old);
        }
        let size = std::mem::size_of::<Node>() + key.bytes.len() + vb.len();
        let (n, forced) = self.alloc(size);
        if n.is_null() {
            return Err(());
        }
        let hv = hash(key.bytes);
        // SAFETY: `n` is a fresh allocation of `size` bytes.
        unsafe {
            ptr::write(
                n,
                Node {
                    lru: Links { prev: ptr::null_mut(), next: ptr::null_mut() },
                    bucket_next: *self.bucket(hv),
                    hash: hv,
                    tag: value.tag(),
                    key_is_str: key.is_str as u8,
                    klen: key.bytes.len() as u32,
                    vlen: vb.len() as u32,
                    expires: self.deadline(ttl_ms),
                },
            );
            let data = (n as *mut u8).add(std::mem::size_of::<Node>());
            ptr::copy_nonoverlapping(key.bytes.as_ptr(), data, key.bytes.len());
            ptr::copy_nonoverlapping(vb.as_ptr(), data.add(key.bytes.len()), vb.len());
            *self.bucket(hv) = n;
            push_front(&mut (*self.h).lru, &mut (*n).lru);
            (*self.h).count += 1;
        }
        Ok(forced)
    }

    fn deadline(&self, ttl_ms: u64) -> u64 {
        if ttl_ms == 0 {
            0
        } else {
            self.now + ttl_ms
        }
    }

    pub fn get(&mut self, key: &[u8]) -> Option<Value> {
        let n = self.find(key);
        (!n.is_null()).then(|| Self::value_of(n))
    }

    pub fn contains(&mut self, key: &[u8]) -> bool {
        !self.find(key).is_null()
    }

    pub fn delete(&mut self, key: &[u8]) -> bool {
        let n = self.find(key);
        if n.is_null() {
            return false;
        }
        self.remove(n);
        true
    }

    /// Remaining milliseconds: None: no such key; Some(None): never expires.
    pub fn ttl(&mut self, key: &[u8]) -> Option<Option<u64>> {
        let n = self.find(key);
        if n.is_null() {
            return None;
        }
        // SAFETY: live node.
        let e = unsafe { (*n).expires };
        Some((e != 0).then(|| e - self.now))
    }

    pub fn expire(&mut self, key: &[u8], ttl_ms: u64) -> bool {
        let n = self.find(key);
        if n.is_null() {
            return false;
        }
        // SAFETY: live node.
        unsafe { (*n).expires = self.deadline(ttl_ms) };
        true
    }

    /// The stored number (Int/Float) of `key`, rewritten in place.
    pub fn update_number(&mut self, key: &[u8], f: impl FnOnce(&Value) -> Result<Value, String>) -> Option<Result<Value, String>> {
        let n = self.find(key);
        if n.is_null() {
            return None;
        }
        let new = match f(&Self::value_of(n)) {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        let b = new.bytes();
        // SAFETY: numbers are 8 bytes: the same size as what is there.
        unsafe {
            if (*n).vlen as usize != b.len() {
                return Some(Err("not a number".into()));
            }
            let p = (n as *mut u8).add(std::mem::size_of::<Node>() + (*n).klen as usize);
            ptr::copy_nonoverlapping(b.as_ptr(), p, b.len());
            (*n).tag = new.tag();
        }
        Some(Ok(new))
    }

    /// Live keys, most recently used first, at most `limit` (0: all).
    pub fn keys(&mut self, limit: usize) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        // SAFETY: walking the LRU list of live nodes while locked.
        unsafe {
            let head = &mut (*self.h).lru as *mut Links;
            let mut l = (*head).next;
            while l != head && (limit == 0 || out.len() < limit) {
                let n = l as *mut Node;
                if !self.expired(n) {
                    out.push((Self::key_of(n).to_vec(), (*n).key_is_str != 0));
                }
                l = (*l).next;
            }
        }
        out
    }

    /// Live entries.
    pub fn len(&mut self) -> usize {
        self.keys(0).len()
    }

    pub fn flush_all(&mut self) {
        loop {
            let o = self.oldest();
            if o.is_null() {
                break;
            }
            self.remove(o);
        }
    }

    /// Free bytes in the zone's slab pool (whole free pages).
    pub fn free_space(&self) -> usize {
        // SAFETY: pool locked; pfree counts free pages.
        unsafe { (*self.pool).pfree * ffi::ngx_pagesize }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: locked in `lock`.
        unsafe { ffi::ngx_shmtx_unlock(&mut (*self.pool).mutex) };
    }
}

/// # Safety
/// `l` is on a list.
unsafe fn unlink(l: *mut Links) {
    (*(*l).prev).next = (*l).next;
    (*(*l).next).prev = (*l).prev;
}

/// # Safety
/// `head` is a list head, `l` on no list.
unsafe fn push_front(head: *mut Links, l: *mut Links) {
    (*l).next = (*head).next;
    (*l).prev = head;
    (*(*head).next).prev = l;
    (*head).next = l;
}
