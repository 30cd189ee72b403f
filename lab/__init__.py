"""The java-crun end-to-end test lab: a library that builds, provisions and drives the lab host.

One package per layer; imports run downwards only (README.md, "Layout"):
pytest_plugin/workflows -> checks -> faults -> nomad | provision -> remote -> core.
"""
