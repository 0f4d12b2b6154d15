"""emergence-lab: width x depth sweeps for studying scale-dependent capability jumps.

This package's top level imports nothing heavy, so `emergence analyze` works where torch is missing.
"""

__version__ = "0.1.0"
