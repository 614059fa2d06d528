//! The `hive` binary; everything is in [`hive::cli`].

/// mimalloc returns freed memory to the system where glibc's allocator kept the high-water mark of a
/// burst of connections (BENCHMARKS.md, footprint).
/// (The `system-allocator` feature leaves it out, for heap profilers that hook malloc.)
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    hive::cli::main()
}
