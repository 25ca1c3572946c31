"""argonic: inference as a service (SONIC) for liquid-argon TPC reconstruction."""

__version__ = "0.1.0"


class ArgonicError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with code 2."""
