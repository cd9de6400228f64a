"""Traces, sentences and answers: the data every other part of cotscope reads.

Importing this package never imports torch.
"""

from cotscope._exports import attach_stub as _attach_stub

# The names are listed once, in __init__.pyi.
__getattr__, __dir__, __all__ = _attach_stub(__name__, __file__)
