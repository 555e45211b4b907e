"""kvm-watchdog: finds and fixes hung libvirt QEMU capability probes."""

from typing import Any


def __getattr__(name: str) -> Any:
    """`__version__`, from the package metadata (the one source), looked up only when asked.

    Lazily, because the latency child imports this package once a minute and
    importlib.metadata costs it more than the rest of its start.
    """
    if name != "__version__":
        raise AttributeError(name)
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return "0+unknown"
    try:
        return version("kvm-watchdog")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "0+unknown"
