"""Sub-command groups of the ``compass`` CLI, one module each. Heavy imports stay inside the commands."""
