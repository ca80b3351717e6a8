//! `argon2-rate [SECONDS]`: Argon2id hashes per second on one thread at
//! OWASP's parameters (19 MiB, t=2, p=1), the login ceiling of one core.
//! Run it pinned (`taskset -c 0 argon2-rate 5`). Prints one line:
//! `hashes_per_second=N hashes=N seconds=S cpu_seconds=C hashes_per_cpu_second=M`,
//! where the CPU time is this thread's time on the CPU (Linux
//! `/proc/thread-self/schedstat`), so that M holds on a busy machine too.

use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, Version};

/// Nanoseconds this thread has run on a CPU, where Linux tells.
fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SECONDS is a number"))
        .unwrap_or(5.0);
    let params = Params::new(19 * 1024, 2, 1, Some(32)).expect("valid Argon2 parameters");
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = [7u8; 16];
    let mut out = [0u8; 32];
    // One hash first, untimed. Each hash allocates its 19 MiB afresh, as a
    // server verifying a password does.
    argon
        .hash_password_into(b"warm up", &salt, &mut out)
        .expect("hash");
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let cpu_start = cpu_ns();
    let mut hashes = 0u64;
    while start.elapsed() < budget {
        argon
            .hash_password_into(format!("password {hashes}").as_bytes(), &salt, &mut out)
            .expect("hash");
        hashes += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = match (cpu_start, cpu_ns()) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e9,
        _ => elapsed,
    };
    println!(
        "hashes_per_second={:.2} hashes={hashes} seconds={elapsed:.3} cpu_seconds={cpu:.3} hashes_per_cpu_second={:.2}",
        hashes as f64 / elapsed,
        hashes as f64 / cpu
    );
}
