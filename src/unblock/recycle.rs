//! A per-worker pool of things a coroutine needs for its life (its C stack,
//! its thread state) that follows the high-water mark: while requests are in
//! flight it keeps as many as were ever in use at once, so a steady 1,000
//! waiting requests reuse 1,000 stacks instead of mapping and unmapping the
//! ones beyond a fixed pool size per request; when the worker is idle again
//! (nothing in use) it shrinks back to `floor`.

pub struct Recycler<T> {
    free: Vec<T>,
    /// Taken and not given back yet.
    in_use: usize,
    /// The most in use at once since the worker was last idle.
    peak: usize,
    /// Kept across idle periods.
    floor: usize,
    /// False: nothing is kept (where reuse is unsafe).
    reuse: bool,
}

impl<T> Recycler<T> {
    pub const fn new(floor: usize, reuse: bool) -> Self {
        Recycler { free: Vec::new(), in_use: 0, peak: 0, floor, reuse }
    }

    /// A kept one, if any; the caller makes a new one otherwise. Either way
    /// it counts as in use until `give_back` (or `lost`).
    pub fn take(&mut self) -> Option<T> {
        self.in_use += 1;
        self.peak = self.peak.max(self.in_use);
        self.free.pop()
    }

    /// Returns one for reuse; it is dropped when more than the high-water
    /// mark would be kept.
    pub fn give_back(&mut self, t: T) {
        if self.reuse && self.free.len() < self.peak.max(self.floor) {
            self.free.push(t);
        }
        self.lost();
    }

    /// One taken is not coming back (leaked after a stack overflow).
    pub fn lost(&mut self) {
        self.in_use = self.in_use.saturating_sub(1);
        if self.in_use == 0 {
            self.peak = 0;
            self.free.truncate(self.floor);
        }
    }
}
