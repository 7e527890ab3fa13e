"""`rethink bench`: speed and memory of our code beside the usual PyTorch idiom and the machine.

timing (median/min/max of timed repetitions after warm-up, matmul peak), machine (what ran it),
idiom (the common reimplementation pattern, our baseline), training (throughput, utilization,
epoch anatomy, time to fit), solvers (kernel interpolation, Theorem 1, data loading), suite
(the plan, one function per part, the targets) and markdown (docs/benchmarks.md); the command
itself is rethink.commands.bench.
"""
