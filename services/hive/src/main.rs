//! The `hive` binary; everything is in [`hive::cli`].

/// mimalloc instead of glibc's malloc: the request path allocates and frees many small buffers on
/// every worker thread, where glibc's malloc spent ~15 % of the hive's CPU (BENCHMARKS.md, "The
/// allocator, and the board's snapshots"). The agents the hive spawns are this binary too. Built
/// without the `mimalloc` feature, the binary uses the system allocator (for heaptrack).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    hive::cli::main()
}
