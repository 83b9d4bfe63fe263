//! Reply frames that reuse their buffers.
//!
//! A frame queued on a connection is freed when its send completes. Frames
//! above glibc's tcache limit (1,032 B) go through malloc's bins, and at
//! 4 KiB echo that allocation and free cost ~0.4 µs per message
//! (`results/echo-vs-raw.md`), as much as copying the payload. So frames
//! of [`MIN_POOLED`]..=[`MAX_POOLED`] bytes take a buffer from a small
//! per-thread free list and give it back when the engine drops the frame.
//! Smaller frames stay plain `Vec`s (tcache is as fast as the list); larger
//! ones are rare enough not to be worth holding.
//!
//! Memory: at most [`MAX_FREE`] buffers and [`MAX_FREE_BYTES`] of capacity
//! are kept per thread, only by threads that have sent such frames, and
//! nothing per connection.

use std::cell::RefCell;

use bytes::Bytes;

/// Smallest frame that takes a pooled buffer: glibc's tcache serves
/// allocations up to 1,032 B from a per-thread cache already.
pub const MIN_POOLED: usize = 1024;
/// Largest buffer capacity the pool keeps.
pub const MAX_POOLED: usize = 64 * 1024;
/// Most buffers the pool keeps per thread: more replies than one loop turn
/// of a worker usually has in flight (20-30 at 1,000 connections x 1).
pub const MAX_FREE: usize = 64;
/// Most bytes of capacity the pool keeps per thread.
pub const MAX_FREE_BYTES: usize = 1 << 20;

#[derive(Default)]
struct FreeList {
    bufs: Vec<Vec<u8>>,
    /// Capacity summed over `bufs`.
    bytes: usize,
}

thread_local! {
    static FREE: RefCell<FreeList> = RefCell::new(FreeList::default());
}

/// A frame's buffer; goes back to its thread's free list when dropped.
struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        if buf.capacity() > MAX_POOLED {
            return;
        }
        buf.clear();
        // During thread exit the list may be gone already: then just free.
        let _ = FREE.try_with(|free| {
            if let Ok(mut free) = free.try_borrow_mut() {
                if free.bufs.len() < MAX_FREE && free.bytes + buf.capacity() <= MAX_FREE_BYTES {
                    free.bytes += buf.capacity();
                    free.bufs.push(buf);
                }
            }
        });
    }
}

/// A frame of `len` bytes written by `fill` into an empty buffer, pooled
/// when `len` is in the pooled range. An unpooled frame's `Vec` has room for
/// `len` bytes exactly, so that `fill` filling it lets `Bytes` take it
/// without allocating a shared header.
pub fn frame(len: usize, fill: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    if !(MIN_POOLED..=MAX_POOLED).contains(&len) {
        let mut buf = Vec::with_capacity(len);
        fill(&mut buf);
        return Bytes::from(buf);
    }
    let mut buf = FREE
        .try_with(|free| {
            let mut free = free.borrow_mut();
            let buf = free.bufs.pop()?;
            free.bytes -= buf.capacity();
            Some(buf)
        })
        .ok()
        .flatten()
        .unwrap_or_default();
    buf.reserve(len);
    fill(&mut buf);
    Bytes::from_owner(Pooled(buf))
}

/// Buffers on this thread's free list (tests).
#[cfg(test)]
fn free_len() -> usize {
    FREE.with(|free| free.borrow().bufs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_buffers_come_back_and_are_reused() {
        let before = free_len();
        let a = frame(4096, |b| b.extend_from_slice(&[7; 4096]));
        assert_eq!(&a[..], &[7; 4096][..]);
        let ptr = a.as_ptr();
        drop(a);
        assert_eq!(free_len(), before + 1);
        // Reused, and a clone keeps the buffer until the last one is gone.
        let b = frame(2000, |b| b.extend_from_slice(&[1; 2000]));
        assert_eq!(b.as_ptr(), ptr);
        assert_eq!(&b[..], &[1; 2000][..]);
        let c = b.clone();
        drop(b);
        assert_eq!(free_len(), before);
        assert_eq!(&c[..], &[1; 2000][..]);
        drop(c);
        assert_eq!(free_len(), before + 1);
    }

    #[test]
    fn small_and_large_frames_are_not_pooled() {
        let before = free_len();
        drop(frame(100, |b| b.extend_from_slice(&[1; 100])));
        drop(frame(MAX_POOLED + 1, |b| b.resize(MAX_POOLED + 1, 2)));
        assert_eq!(free_len(), before);
    }

    #[test]
    fn the_free_list_is_bounded() {
        let frames: Vec<Bytes> = (0..MAX_FREE + 5)
            .map(|_| frame(4096, |b| b.resize(4096, 0)))
            .collect();
        drop(frames);
        assert_eq!(free_len(), MAX_FREE);
    }
}
