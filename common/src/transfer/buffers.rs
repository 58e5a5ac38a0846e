//! One memory budget for the part buffers of every object in flight, so that
//! streaming transfers (downup) stay within `concurrency × part_size` plus a
//! constant for the whole process, not per object.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Granularity of the budget: reservations are rounded up to 64 KiB.
const UNIT: u64 = 64 * 1024;

/// A budget of buffer bytes shared by every object worked at once (clone it
/// into each [`TransferOptions`](super::TransferOptions): the clones share the
/// budget). A transfer reserves room before it buffers a part or an object and
/// releases it when the bytes are sent; a reservation waits (first come, first
/// served) while the budget is used up. Equality is identity: two pools are
/// equal when they are the same budget.
#[derive(Debug, Clone)]
pub struct BufferPool {
    sem: Arc<Semaphore>,
    units: u32,
}

/// Room reserved in a [`BufferPool`]; given back when dropped.
#[derive(Debug)]
pub struct Reserved {
    _permit: Option<OwnedSemaphorePermit>,
}

impl BufferPool {
    /// A budget of `bytes` (at least 64 KiB), e.g. `concurrency × part_size`.
    pub fn new(bytes: u64) -> Self {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize) as u32);
        BufferPool {
            sem: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// The whole budget, in bytes (rounded up to 64 KiB).
    pub fn capacity(&self) -> u64 {
        u64::from(self.units) * UNIT
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }

    /// Reserve room for a buffer of `bytes`, waiting until it is free. A buffer
    /// larger than the whole budget (a source part larger than it, reproduced
    /// as is) reserves the whole budget: it then is the only one held.
    pub async fn reserve(&self, bytes: u64) -> Reserved {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units);
        // The semaphore is never closed, so this never fails; if it did, the
        // transfer would go on unbounded rather than fail.
        let permit = self.sem.clone().acquire_many_owned(units).await.ok();
        Reserved { _permit: permit }
    }
}

impl PartialEq for BufferPool {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.sem, &other.sem)
    }
}

impl Eq for BufferPool {}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[tokio::test]
    async fn reservations_wait_for_room_and_give_it_back() {
        let pool = BufferPool::new(4 * MIB);
        assert_eq!(pool.capacity(), 4 * MIB);
        let a = pool.reserve(3 * MIB).await;
        assert_eq!(pool.available(), MIB);
        let small = pool.reserve(1).await;
        assert_eq!(pool.available(), MIB - UNIT, "rounded up to one unit");
        // No room for 1 MiB more until `a` is dropped.
        let waiting = pool.reserve(MIB);
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        drop(a);
        let b = waiting.await;
        assert_eq!(pool.available(), 3 * MIB - UNIT);
        drop((b, small));
        assert_eq!(pool.available(), 4 * MIB);
    }

    #[tokio::test]
    async fn a_buffer_larger_than_the_budget_takes_all_of_it() {
        let pool = BufferPool::new(2 * MIB);
        let huge = pool.reserve(100 * MIB).await;
        assert_eq!(pool.available(), 0);
        let next = pool.reserve(1);
        tokio::pin!(next);
        assert!(futures::poll!(next.as_mut()).is_pending());
        drop(huge);
        next.await;
    }

    #[test]
    fn clones_share_the_budget_and_compare_equal() {
        let pool = BufferPool::new(MIB);
        let clone = pool.clone();
        assert_eq!(pool, clone);
        assert_ne!(pool, BufferPool::new(MIB));
        assert_eq!(BufferPool::new(0).capacity(), UNIT, "at least one unit");
    }
}
