"""Training solvers that share pnode's communicator (trust-region, multilevel, unrolling)."""
