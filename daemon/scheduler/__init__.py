"""What runs in ``compass daemon``: per language, on a schedule and under a lease, read -> step -> write -> dispatch."""
