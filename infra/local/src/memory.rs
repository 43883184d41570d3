//! The memory each invocation holds, for the benches: a counting allocator, which a bench
//! installs as its global allocator, and a tag per invocation carried by the invocation's
//! future. Every allocation records the tag of the invocation that made it, in a header in
//! front of it, so that freeing it counts against the same invocation wherever that happens.
//! What an invocation holds at its busiest is its peak: what one Lambda instance, which runs
//! one invocation at a time, needs beyond its process's fixed part.
//!
//! Without the allocator installed every peak reads 0; the tags cost a thread-local write per
//! poll.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::task::{Context, Poll};

/// Invocations counted at once; tags are used round, so this many invocations later a tag
/// counts again from zero.
const SLOTS: usize = 1 << 16;
/// Bytes in front of every allocation, holding its tag; also the least alignment used.
const HEADER: usize = 16;

static LIVE: [AtomicI64; SLOTS] = [const { AtomicI64::new(0) }; SLOTS];
static PEAK: [AtomicI64; SLOTS] = [const { AtomicI64::new(0) }; SLOTS];
static NEXT: AtomicU32 = AtomicU32::new(1);

thread_local! {
    /// The tag of the invocation being polled on this thread; 0 for none.
    static TAG: Cell<u32> = const { Cell::new(0) };
}

fn slot(tag: u32) -> usize {
    tag as usize % SLOTS
}

fn account(tag: u32, delta: i64) {
    if tag == 0 {
        return;
    }
    let i = slot(tag);
    let live = LIVE[i].fetch_add(delta, Ordering::Relaxed) + delta;
    if delta > 0 {
        PEAK[i].fetch_max(live, Ordering::Relaxed);
    }
}

fn outer(layout: Layout) -> Option<(Layout, usize)> {
    let offset = layout.align().max(HEADER);
    let size = layout.size().checked_add(offset)?;
    Layout::from_size_align(size, offset)
        .ok()
        .map(|l| (l, offset))
}

/// A block for `layout` from `system` (given the whole layout, header included), its tag
/// written in front and counted.
///
/// # Safety
/// `system` must return null or a block of the whole layout it is given.
unsafe fn tagged(layout: Layout, system: impl FnOnce(Layout) -> *mut u8) -> *mut u8 {
    let Some((whole, offset)) = outer(layout) else {
        return std::ptr::null_mut();
    };
    // `whole` has a non-zero size (at least the header).
    let base = system(whole);
    if base.is_null() {
        return base;
    }
    let tag = TAG.try_with(Cell::get).unwrap_or(0);
    // SAFETY: the block starts with HEADER bytes aligned to at least 16.
    unsafe { (base as *mut u32).write(tag) };
    account(tag, layout.size() as i64);
    // SAFETY: `offset` is within the block.
    unsafe { base.add(offset) }
}

/// The system allocator, counting what each invocation holds.
pub struct Counting;

// SAFETY: every block handed out is the system allocator's block moved on by `offset`, which
// is a multiple of the requested alignment and leaves room for the tag in front; freeing and
// resizing undo the same offset with the same layout the caller passes back.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `System.alloc`, for a layout of non-zero size.
        unsafe { tagged(layout, |whole| System.alloc(whole)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `System.alloc_zeroed`, for a layout of non-zero size.
        unsafe { tagged(layout, |whole| System.alloc_zeroed(whole)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some((whole, offset)) = outer(layout) else {
            return;
        };
        // SAFETY: `ptr` came from `alloc` with this layout, so its block starts `offset` before.
        let base = unsafe { ptr.sub(offset) };
        // SAFETY: the tag was written there by `alloc`.
        let tag = unsafe { (base as *const u32).read() };
        account(tag, -(layout.size() as i64));
        // SAFETY: `base` and `whole` are the block and layout `alloc` had from the system.
        unsafe { System.dealloc(base, whole) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some((whole, offset)) = outer(layout) else {
            return std::ptr::null_mut();
        };
        let Some(new_whole) = new_size.checked_add(offset) else {
            return std::ptr::null_mut();
        };
        // SAFETY: as in `dealloc`; the system moves the header with the block.
        let base = unsafe { ptr.sub(offset) };
        let moved = unsafe { System.realloc(base, whole, new_whole) };
        if moved.is_null() {
            return moved;
        }
        // SAFETY: the header moved with the block.
        let tag = unsafe { (moved as *const u32).read() };
        account(tag, new_size as i64 - layout.size() as i64);
        // SAFETY: `offset` is within the resized block.
        unsafe { moved.add(offset) }
    }
}

/// A new invocation's tag, counting from zero.
pub fn begin() -> u32 {
    let tag = loop {
        let t = NEXT.fetch_add(1, Ordering::Relaxed);
        if t != 0 {
            break t;
        }
    };
    LIVE[slot(tag)].store(0, Ordering::Relaxed);
    PEAK[slot(tag)].store(0, Ordering::Relaxed);
    tag
}

/// The most bytes invocation `tag` held at once so far.
pub fn peak(tag: u32) -> u64 {
    PEAK[slot(tag)].load(Ordering::Relaxed).max(0) as u64
}

/// A future whose allocations count against invocation `tag` while it is polled.
pub struct Tagged<F> {
    tag: u32,
    inner: Pin<Box<F>>,
}

impl<F: Future> Tagged<F> {
    pub fn new(tag: u32, inner: F) -> Tagged<F> {
        Tagged {
            tag,
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for Tagged<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let tag = self.tag;
        let before = TAG.with(|t| t.replace(tag));
        let out = self.inner.as_mut().poll(cx);
        TAG.with(|t| t.set(before));
        out
    }
}
