"""Benchmarks that do NOT run headstart's own code path: they time a re-implementation (e.g. MiniLM through
transformers directly, with their own split), so their figures say what the method can do, not what the pipeline
does. Run as `python -m bench.not_headstart_path.<name>`."""
