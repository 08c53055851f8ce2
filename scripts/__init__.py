"""Developer scripts. A package so that the tests can import the code they check (tests/test_layout.py imports
`scripts.dvc_deps`, the one place that computes each dvc.yaml stage's code deps)."""
