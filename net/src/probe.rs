//! Whether io_uring can be used, checked before any shard starts, so the operator
//! gets one line naming the cause and the fix instead of an executor panic.

use std::fmt;

/// Locked memory glommio needs per executor (it refuses below this).
pub const MEMLOCK_PER_SHARD_MIN: u64 = 512 * 1024;

/// Why io_uring cannot be used here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error(
        "io_uring is disabled by sysctl kernel.io_uring_disabled={0}; \
         fix: `sysctl -w kernel.io_uring_disabled=0` (or add the user to kernel.io_uring_group when it is 1)"
    )]
    DisabledBySysctl(u8),
    #[error(
        "io_uring_setup is not available (ENOSYS): the kernel is older than 5.1 or built \
         without io_uring; fix: run on Linux 5.10 or newer with CONFIG_IO_URING=y"
    )]
    NotInKernel,
    #[error(
        "io_uring_setup was refused (EPERM): a seccomp profile (e.g. a container's default) \
         blocks it; fix: allow io_uring_setup, io_uring_enter and io_uring_register in the \
         profile (docker: --security-opt seccomp=<profile>), or run outside the container"
    )]
    Blocked,
    #[error(
        "locked-memory limit is {have_bytes} bytes but {shards} shard(s) need at least {need_bytes}; \
         fix: `ulimit -l unlimited` in the shell, or LimitMEMLOCK=infinity in the systemd unit"
    )]
    MemlockTooLow {
        have_bytes: u64,
        need_bytes: u64,
        shards: usize,
    },
    #[error("io_uring_setup failed: {0}")]
    Other(Errno),
}

/// An errno value with its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

/// Checks that `shards` executors can be created: the sysctl, the syscall itself,
/// and the locked-memory limit.
pub fn check(shards: usize) -> Result<(), Unavailable> {
    if let Some(level) = sysctl_disabled() {
        if level == 2 {
            return Err(Unavailable::DisabledBySysctl(level));
        }
    }
    if let Err(errno) = setup_ring() {
        return Err(match errno {
            libc::ENOSYS => Unavailable::NotInKernel,
            libc::EPERM => match sysctl_disabled() {
                Some(level) if level > 0 => Unavailable::DisabledBySysctl(level),
                _ => Unavailable::Blocked,
            },
            other => Unavailable::Other(Errno(other)),
        });
    }
    let have_bytes = memlock_limit();
    let need_bytes = MEMLOCK_PER_SHARD_MIN.saturating_mul(shards as u64);
    if have_bytes < need_bytes {
        return Err(Unavailable::MemlockTooLow {
            have_bytes,
            need_bytes,
            shards,
        });
    }
    Ok(())
}

fn sysctl_disabled() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|text| text.trim().parse().ok())
}

/// Creates and closes a one-entry ring.
fn setup_ring() -> Result<(), i32> {
    // struct io_uring_params is 120 bytes; zeroed means "no flags".
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup(2) takes an entry count and a pointer to a writable
    // io_uring_params of 120 bytes, which `params` is, alive for the whole call.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: `fd` is a descriptor io_uring_setup just returned to us and nothing
    // else owns it.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

fn memlock_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct through the pointer, which points to
    // a live local.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return u64::MAX;
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_io_uring() {
        // The test machines have io_uring enabled (shared/TESTBED.md); this runs the
        // raw syscall path that guards every start.
        assert_eq!(check(1), Ok(()));
    }

    #[test]
    fn memlock_shortfall_names_the_fix() {
        let error = check(usize::MAX / (MEMLOCK_PER_SHARD_MIN as usize)).map(|_| ());
        if memlock_limit() != u64::MAX {
            let text = error.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(text.contains("LimitMEMLOCK=infinity"), "{text}");
        }
    }
}
