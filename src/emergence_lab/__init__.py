"""emergence-lab: width x depth sweeps for studying scale-dependent capability jumps.

This package's top level imports nothing heavy, so `emergence analyze` works where torch is missing.
"""

try:  # written at build/install time by setuptools-scm
    from emergence_lab._version import __version__
except ImportError:  # pragma: no cover - a source tree that was never installed
    __version__ = "unknown"
