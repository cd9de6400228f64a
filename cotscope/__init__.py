"""cotscope: which sentences of a chain of thought drive the answer, and is it faithful?"""

__version__ = "0.1.0"
