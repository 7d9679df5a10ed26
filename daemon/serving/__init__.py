"""The multi-adapter model server (§3.2.5): one base model, every language's current adapter, hot promotion."""

from daemon.serving.listener import PromotionListener
from daemon.serving.server import AdapterServer, CompletionStream, Generation

__all__ = ["AdapterServer", "CompletionStream", "Generation", "PromotionListener"]
