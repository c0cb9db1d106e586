"""scaling: compute-budgeted scaling-law studies of NFNets and ViTs in JAX."""

__version__ = "0.1.0"
