"""Benchmarks: ``dcm bench <target> [--json]``; each target compares against a baseline in the same run."""
