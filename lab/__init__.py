"""The java-crun end-to-end test lab: a library that builds, provisions and drives the lab host.

The data flow is vm -> host -> agent -> api/jobs; faults and diag use host and api only.
"""
