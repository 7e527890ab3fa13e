"""rethink: the randomization tests of "Understanding deep learning requires rethinking generalization"."""

__version__ = "0.1.0"
