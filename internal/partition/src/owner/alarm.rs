//! The wheel's wake-up, precise to the microsecond.
//!
//! tokio's timers round every deadline up to a whole millisecond of its own
//! clock, which starts at an arbitrary instant: a wake for an event due at
//! wall-clock millisecond `T` came between `T` and `T + 2 ms`, and every
//! event carried that into its lateness. A `timerfd` armed for the exact
//! remaining microseconds wakes the owner (through tokio's reactor) within
//! the kernel's timer slack of `T`.
//!
//! The timer is relative (`CLOCK_MONOTONIC`), computed from the same wall
//! clock the wheel releases by, and armed only for deadlines within
//! `REACH_MS`: a step of the wall clock is noticed as soon as tokio's capped
//! nap would notice it. Where no `timerfd` can be made, the owner keeps to
//! tokio's timer.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// Deadlines further away than this are left to tokio's timer (with its
/// capped nap), so a wall-clock step is noticed within it.
const REACH_MS: i64 = 1_000;

pub(crate) struct Alarm {
    /// `None` where `timerfd` is not available.
    fd: Option<AsyncFd<OwnedFd>>,
    /// The wall-clock millisecond it is armed for.
    armed: Option<i64>,
}

impl Alarm {
    /// Needs tokio's reactor: made inside the runtime.
    pub fn new(partition: u32) -> Alarm {
        // SAFETY: the `OwnedFd` is the timerfd's only owner, and moves into
        // the `AsyncFd`, which holds it open until it is dropped.
        let fd = timerfd().and_then(|fd| unsafe { AsyncFd::register(fd) }.map_err(io::Error::from));
        if let Err(e) = &fd {
            tracing::warn!(
                partition,
                "no precise timer, firing to the millisecond: {e}"
            );
        }
        Alarm {
            fd: fd.ok(),
            armed: None,
        }
    }

    /// Arms the alarm for wall-clock millisecond `due_ms` (`wall_us` is the
    /// wall clock now, in µs), or disarms it. False if it does not take the
    /// deadline (too near, too far, no timer): tokio's timer must.
    pub fn set(&mut self, due_ms: Option<i64>, wall_us: i64) -> bool {
        let Some(fd) = &self.fd else {
            return false;
        };
        let delay_us = due_ms.map(|ms| ms.saturating_mul(1_000).saturating_sub(wall_us));
        let takes = delay_us.is_some_and(|d| d > 0 && d <= REACH_MS * 1_000);
        let target = due_ms.filter(|_| takes);
        if target == self.armed {
            return takes;
        }
        let delay_us = if takes { delay_us.unwrap_or(0) } else { 0 };
        // A zero `it_value` disarms.
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (delay_us / 1_000_000) as libc::time_t,
                tv_nsec: ((delay_us % 1_000_000) * 1_000) as libc::c_long,
            },
        };
        // SAFETY: `fd` is an open timerfd and `spec` a valid itimerspec.
        let rc = unsafe {
            libc::timerfd_settime(fd.get_ref().as_raw_fd(), 0, &spec, std::ptr::null_mut())
        };
        if rc != 0 {
            tracing::warn!("arming the wheel's timer: {}", io::Error::last_os_error());
            self.armed = None;
            return false;
        }
        self.armed = target;
        takes
    }

    pub fn armed(&self) -> bool {
        self.armed.is_some()
    }

    /// Resolves once the armed deadline passed; pending while disarmed.
    pub async fn rung(&mut self) {
        let Some(fd) = self.fd.as_ref().filter(|_| self.armed.is_some()) else {
            return std::future::pending().await;
        };
        loop {
            let Ok(mut ready) = fd.readable().await else {
                break;
            };
            let mut expirations = [0u8; 8];
            // SAFETY: reads 8 bytes into an 8-byte buffer from an open fd.
            let read = ready.try_io(|fd| {
                let n = unsafe {
                    libc::read(
                        fd.get_ref().as_raw_fd(),
                        expirations.as_mut_ptr().cast(),
                        expirations.len(),
                    )
                };
                match n {
                    n if n < 0 => Err(io::Error::last_os_error()),
                    _ => Ok(()),
                }
            });
            match read {
                Ok(Ok(())) => break,
                // Not yet expired (readiness was stale): wait again.
                Err(_would_block) => continue,
                Ok(Err(e)) => {
                    tracing::warn!("reading the wheel's timer: {e}");
                    break;
                }
            }
        }
        self.armed = None;
    }
}

fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wall_us;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn rings_at_the_wall_clock_millisecond_never_before() {
        let mut alarm = Alarm::new(0);
        for _ in 0..20 {
            let now = wall_us();
            let due_ms = now / 1_000 + 3;
            assert!(alarm.set(Some(due_ms), now));
            tokio::time::timeout(Duration::from_secs(5), alarm.rung())
                .await
                .expect("the alarm rings");
            let late_us = wall_us() - due_ms * 1_000;
            assert!(late_us >= 0, "rang {}µs early", -late_us);
            assert!(!alarm.armed(), "a ring disarms");
        }
    }

    #[tokio::test]
    async fn leaves_past_far_and_no_deadlines_to_tokio_and_disarms() {
        let mut alarm = Alarm::new(0);
        let now = wall_us();
        assert!(!alarm.set(Some(now / 1_000 - 1), now), "already due");
        assert!(!alarm.set(Some(now / 1_000 + 5_000), now), "beyond reach");
        assert!(!alarm.set(None, now));
        assert!(alarm.set(Some(now / 1_000 + 200), now));
        assert!(!alarm.set(None, now), "disarmed");
        let start = Instant::now();
        let rang = tokio::time::timeout(Duration::from_millis(400), alarm.rung()).await;
        assert!(rang.is_err(), "a disarmed alarm rang");
        assert!(start.elapsed() >= Duration::from_millis(400));
    }
}
