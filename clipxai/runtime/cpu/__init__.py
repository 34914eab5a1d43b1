"""CPU speed and memory: the cached optimized graph, attention fusion, glibc and BLAS thread settings."""
