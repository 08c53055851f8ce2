"""Benchmarks, each named by the question it answers; run from the repository root as `python -m bench.<name>`.
Every one uses `bench._harness`; those that time a re-implementation rather than headstart's own code path are in
`bench.not_headstart_path`. Results and the commands that produced them: bench/RESULTS.md."""
