"""glocal: gradient-based HPO with glocal hypergradients (Hankel DMD of local hypergradients)."""

__version__ = "0.1.0"
