//! Every limit of the crate in one place, with the production cost of new hashes.
//! The asserts at the bottom keep them consistent with each other.

/// Largest password file read; past it loading fails rather than eating memory.
pub const PASSWORD_FILE_BYTES_MAX: u64 = 64 << 20;
/// Users one password file may hold.
pub const PASSWORD_USERS_MAX: usize = 1_000_000;
/// Longest username: an MQTT UTF-8 string cannot be longer.
pub const USERNAME_BYTES_MAX: usize = 65_535;

/// Memory of one argon2id check (KiB). Each verifier thread allocates this per
/// check, so a file asking for more is refused.
pub const ARGON2_MEMORY_KIB_MAX: u32 = 256 * 1024;
/// Passes of one argon2id check.
pub const ARGON2_TIME_COST_MAX: u32 = 32;
/// Lanes of one argon2id check (computed on one thread here).
pub const ARGON2_LANES_MAX: u32 = 16;
/// PBKDF2 iterations; OWASP asks 210,000 for SHA-512, this leaves ample room.
pub const PBKDF2_ROUNDS_MAX: u32 = 10_000_000;
/// bcrypt cost (log2 rounds); 16 already takes seconds per check.
pub const BCRYPT_COST_MAX: u32 = 16;
/// Salt of the `$sha256$` scheme, bytes.
pub const SHA256_SALT_BYTES_MIN: usize = 8;
pub const SHA256_SALT_BYTES_MAX: usize = 64;

/// argon2id cost of [`crate::hash_password`]: OWASP's first choice (19 MiB, 2
/// passes, 1 lane), about 50 ms of CPU per check on the 2-core test VM.
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
pub const ARGON2_TIME_COST: u32 = 2;
pub const ARGON2_LANES: u32 = 1;
/// Hash output and random salt of [`crate::hash_password`], bytes.
pub const ARGON2_OUTPUT_BYTES: usize = 32;
pub const ARGON2_SALT_BYTES: usize = 16;
/// Longest hash output any accepted PHC entry may carry (the PHC limit).
pub const HASH_OUTPUT_BYTES_MAX: usize = 64;

/// Largest ACL file read.
pub const ACL_FILE_BYTES_MAX: u64 = 16 << 20;
/// Rules one ACL file may hold.
pub const ACL_RULES_MAX: usize = 100_000;
/// Filters one rule may list.
pub const ACL_TOPICS_PER_RULE_MAX: usize = 1_000;
/// Longest rule filter, bytes (an MQTT string cannot be longer).
pub const ACL_FILTER_BYTES_MAX: usize = 65_535;
/// Levels of one rule filter.
pub const ACL_FILTER_LEVELS_MAX: usize = 1_024;

/// Verifier threads; more would only contend for the same cores.
pub const VERIFIER_THREADS_MAX: usize = 64;

const _: () = {
    assert!(ARGON2_MEMORY_KIB <= ARGON2_MEMORY_KIB_MAX);
    assert!(ARGON2_TIME_COST <= ARGON2_TIME_COST_MAX);
    assert!(ARGON2_LANES <= ARGON2_LANES_MAX);
    assert!(ARGON2_OUTPUT_BYTES <= HASH_OUTPUT_BYTES_MAX);
    // argon2 wants at least 8 bytes of salt and 8 KiB per lane.
    assert!(ARGON2_SALT_BYTES >= 8);
    assert!(ARGON2_MEMORY_KIB >= 8 * ARGON2_LANES);
    assert!(SHA256_SALT_BYTES_MIN <= SHA256_SALT_BYTES_MAX);
    assert!(USERNAME_BYTES_MAX <= ACL_FILTER_BYTES_MAX);
    assert!(VERIFIER_THREADS_MAX >= 1);
};
