//! A provided-buffer ring: receive buffers the kernel picks from at
//! completion time, so a connection with nothing to read owns no buffer.
//!
//! One anonymous mapping holds the ring of buffer descriptors followed by the
//! buffers themselves. A buffer id handed out in a completion belongs to us
//! until [`BufRing::recycle`] gives it back.
//!
//! Incremental consumption (`IOU_PBUF_RING_INC`, Linux 6.12): the kernel
//! fills the head buffer receive after receive, whichever connection the
//! data is for, and hands a buffer back for good only once it is full
//! (`IORING_CQE_F_BUF_MORE` clear). Small reads then pack into a few pages
//! instead of touching one page of a different buffer each, which is what
//! made idle connections cost a page of receive buffer apiece until the
//! whole pool had been touched. Each buffer's consumed prefix is tracked
//! here, since every completion's data starts where the previous one's ended.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use crate::ring::Ring;

/// `IOU_PBUF_RING_INC` from `linux/io_uring.h` (the crate does not export it).
const IOU_PBUF_RING_INC: u16 = 2;

/// A registered provided-buffer ring of `count` buffers of `size` bytes.
pub struct BufRing {
    base: NonNull<u8>,
    map_len: usize,
    ring_bytes: usize,
    count: u16,
    size: u32,
    bgid: u16,
    /// Our copy of the tail; published to the kernel by [`BufRing::commit`].
    tail: u16,
    /// Incremental mode: bytes of each buffer already handed out (the next
    /// completion's data starts there). Empty otherwise.
    consumed: Vec<u32>,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("count", &self.count)
            .field("size", &self.size)
            .field("bgid", &self.bgid)
            .finish()
    }
}

impl BufRing {
    /// Maps, fills and registers the ring as buffer group `bgid`.
    ///
    /// # Safety
    /// The kernel writes received data into this mapping until the group is
    /// unregistered. The caller must call [`BufRing::unregister`] on the same
    /// `ring`, or drop the ring, before dropping the returned value (the
    /// worker keeps the ring in a field declared before the buffers, and
    /// unregisters at the end of its loop).
    /// With `incremental`, asks for incremental consumption and falls back
    /// to whole buffers on kernels that refuse it ([`BufRing::incremental`]).
    pub unsafe fn new(
        ring: &Ring,
        bgid: u16,
        count: u32,
        size: u32,
        incremental: bool,
    ) -> io::Result<Self> {
        // Checked by `EngineConfig::check` (the ring index math needs it).
        debug_assert!(count.is_power_of_two() && count <= 32768);
        let page = 4096;
        let ring_bytes =
            (count as usize * std::mem::size_of::<BufRingEntry>()).next_multiple_of(page);
        let map_len = ring_bytes + count as usize * size as usize;
        // SAFETY: anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).expect("mmap returned non-null");
        let mut this = Self {
            base,
            map_len,
            ring_bytes,
            count: count as u16,
            size,
            bgid,
            tail: 0,
            consumed: Vec::new(),
        };
        // SAFETY: the mapping is page-aligned, holds `count` entries and lives
        // until `Drop`; our caller promised to unregister the group or drop the
        // ring before that.
        let register = |flags: u16| unsafe {
            ring.uring.submitter().register_buf_ring_with_flags(
                base.as_ptr() as u64,
                count as u16,
                bgid,
                flags,
            )
        };
        let registered = if incremental {
            match register(IOU_PBUF_RING_INC) {
                Ok(()) => {
                    this.consumed = vec![0; count as usize];
                    Ok(())
                }
                Err(e) => {
                    log::warn!(
                        "io_uring: incremental buffer consumption unavailable ({e}); whole buffers"
                    );
                    register(0)
                }
            }
        } else {
            register(0)
        };
        registered.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("registering the provided-buffer ring: {e}"),
            )
        })?;
        for bid in 0..count as u16 {
            // SAFETY: the kernel has been given no buffer yet; each id is
            // handed over once.
            unsafe { this.recycle(bid) };
        }
        this.commit();
        Ok(this)
    }

    /// The buffer group id to put in receive SQEs.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// True if the kernel consumes buffers incrementally.
    pub fn incremental(&self) -> bool {
        !self.consumed.is_empty()
    }

    /// The `len` bytes a completion delivered in buffer `bid`: at its
    /// start, or in incremental mode where the previous completion's data
    /// in it ended.
    ///
    /// # Safety
    /// `bid` must come from the completion being handled, whose data has
    /// not been passed to [`BufRing::consumed`] yet: the kernel does not
    /// write those bytes again until the buffer is recycled (in
    /// incremental mode it goes on filling the bytes after them).
    pub unsafe fn get_mut(&mut self, bid: u16, len: usize) -> &mut [u8] {
        let start = self.consumed.get(bid as usize).map_or(0, |&c| c as usize);
        assert!(
            bid < self.count && start + len <= self.size as usize,
            "buffer {bid}/{start}+{len} out of range"
        );
        // SAFETY: bid, start and len are in bounds of the mapping; the caller
        // holds these bytes (see above), and `&mut self` keeps the slice unique.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base
                    .as_ptr()
                    .add(self.ring_bytes + bid as usize * self.size as usize + start),
                len,
            )
        }
    }

    /// A completion's `len` bytes in buffer `bid` have been handled. The
    /// buffer goes back to the kernel unless it still holds it (`more`: the
    /// completion had `IORING_CQE_F_BUF_MORE`, incremental mode only).
    ///
    /// # Safety
    /// As [`BufRing::recycle`], and no slice from [`BufRing::get_mut`] may
    /// be alive.
    pub unsafe fn consumed(&mut self, bid: u16, len: usize, more: bool) {
        if let Some(c) = self.consumed.get_mut(bid as usize) {
            if more {
                *c += len as u32;
                return;
            }
            *c = 0;
        }
        // SAFETY: the caller's contract is recycle's.
        unsafe { self.recycle(bid) };
    }

    /// Gives buffer `bid` back to the kernel (visible after [`BufRing::commit`]).
    ///
    /// # Safety
    /// `bid` must be held by us (handed out by a completion, or never given to
    /// the kernel) and not be borrowed: once published, the kernel may write
    /// into it at any time, and a buffer in the ring twice could be handed to
    /// two receives at once.
    pub unsafe fn recycle(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        let mask = self.count - 1;
        let addr = self.base.as_ptr() as u64
            + self.ring_bytes as u64
            + u64::from(bid) * u64::from(self.size);
        // SAFETY: the entry index is masked into the ring; entries are plain data
        // the kernel reads only up to the published tail, which we have not yet moved.
        let entry = unsafe {
            &mut *self
                .base
                .as_ptr()
                .cast::<BufRingEntry>()
                .add((self.tail & mask) as usize)
        };
        entry.set_addr(addr);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes recycled buffers to the kernel.
    pub fn commit(&mut self) {
        // SAFETY: the tail field lives inside the first ring entry of our
        // mapping; the kernel reads it concurrently, hence the atomic release store.
        let tail = unsafe {
            &*(BufRingEntry::tail(self.base.as_ptr().cast::<BufRingEntry>()) as *const AtomicU16)
        };
        tail.store(self.tail, Ordering::Release);
    }

    /// Unregisters the group; called before the ring is dropped.
    pub fn unregister(&mut self, ring: &Ring) {
        let _ = ring.uring.submitter().unregister_buf_ring(self.bgid);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` with this length. The ring is
        // unregistered (or the io_uring closed) before a worker drops this.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
    }
}
