//! The process's allocator, for binaries that enable the `jemalloc` feature (the `switchyard` binary and the
//! benchmarks).
//!
//! A node allocates and frees a little for every query. Under a flood, glibc's malloc keeps what it freed in its
//! per-thread arenas: the memory benchmark's RSS stayed at its peak after a million queries (421 MiB), although a
//! heap profile (heaptrack) showed no leak (300 KiB left at exit). jemalloc, with a background thread purging
//! dirty pages after a second (options built in through `JEMALLOC_SYS_WITH_MALLOC_CONF` in `.cargo/config.toml`),
//! hands that memory back to the system: the RSS after a flood falls to what the node really holds.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
