"""COMPASS / COMPASS-ECDA: the method, pure (no Kafka or Redis imports here).

See ../shared/paper/compass-paper.md §3 for the equations cited in the modules.
"""

__version__ = "0.1.0"
