//! Session slots: the gateway-wide `--max-connections` and the per-address
//! `--max-sessions-per-ip`. A slot is a guard taken before the upgrade and moved into the
//! session, so it is freed whatever happens: a failed upgrade, a client reset, a panic or a
//! cancelled task.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefusal {
    /// The gateway runs `--max-connections` sessions.
    Capacity,
    /// This address already runs `--max-sessions-per-ip` sessions.
    PerAddress,
}

impl SlotRefusal {
    /// The `stt_connections_refused_total` reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Capacity => "capacity",
            Self::PerAddress => "per_ip",
        }
    }
}

/// Sessions open per client address (only addresses with at least one).
type AddressCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

#[derive(Debug)]
pub struct SessionSlots {
    total: Arc<Semaphore>,
    max_per_address: usize,
    per_address: AddressCounts,
}

/// One session's slot; dropping it frees it.
#[derive(Debug)]
pub struct SessionSlot {
    _total: OwnedSemaphorePermit,
    address: Option<(IpAddr, AddressCounts)>,
}

impl SessionSlots {
    /// `max_per_address` 0 turns the per-address cap off.
    pub fn new(max_total: usize, max_per_address: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(max_total)),
            max_per_address,
            per_address: Arc::default(),
        }
    }

    pub fn try_acquire(&self, address: IpAddr) -> Result<SessionSlot, SlotRefusal> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| SlotRefusal::Capacity)?;
        if self.max_per_address == 0 {
            return Ok(SessionSlot {
                _total: total,
                address: None,
            });
        }
        let mut counts = self
            .per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(address).or_insert(0);
        if *count >= self.max_per_address {
            return Err(SlotRefusal::PerAddress);
        }
        *count += 1;
        Ok(SessionSlot {
            _total: total,
            address: Some((address, self.per_address.clone())),
        })
    }

    /// Sessions holding a slot now.
    pub fn in_use(&self, max_total: usize) -> usize {
        max_total - self.total.available_permits()
    }

    /// Addresses holding at least one slot (bounded by the sessions open).
    pub fn addresses(&self) -> usize {
        self.per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let Some((address, counts)) = &self.address else {
            return;
        };
        let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_total_and_the_per_address_caps_hold_and_free() {
        let slots = SessionSlots::new(3, 2);
        let a1 = slots.try_acquire(ip(1)).unwrap();
        let _a2 = slots.try_acquire(ip(1)).unwrap();
        assert_eq!(
            slots.try_acquire(ip(1)).unwrap_err(),
            SlotRefusal::PerAddress
        );
        let _b1 = slots.try_acquire(ip(2)).unwrap();
        assert_eq!(slots.try_acquire(ip(3)).unwrap_err(), SlotRefusal::Capacity);
        assert_eq!(slots.in_use(3), 3);
        drop(a1);
        assert_eq!(slots.in_use(3), 2);
        let _a3 = slots.try_acquire(ip(1)).unwrap();
    }

    #[test]
    fn a_refused_address_does_not_hold_a_total_slot() {
        let slots = SessionSlots::new(2, 1);
        let _a = slots.try_acquire(ip(1)).unwrap();
        assert!(slots.try_acquire(ip(1)).is_err());
        assert_eq!(slots.in_use(2), 1);
        let _b = slots.try_acquire(ip(2)).unwrap();
    }

    #[test]
    fn addresses_are_forgotten_when_their_last_slot_goes() {
        let slots = SessionSlots::new(10, 4);
        let held: Vec<_> = (0..5)
            .map(|last| slots.try_acquire(ip(last)).unwrap())
            .collect();
        assert_eq!(slots.addresses(), 5);
        drop(held);
        assert_eq!(slots.addresses(), 0);
        assert_eq!(slots.in_use(10), 0);
    }

    #[test]
    fn zero_turns_the_per_address_cap_off() {
        let slots = SessionSlots::new(100, 0);
        let held: Vec<_> = (0..100)
            .map(|_| slots.try_acquire(ip(1)).unwrap())
            .collect();
        assert_eq!(held.len(), 100);
        assert_eq!(slots.addresses(), 0);
    }
}
