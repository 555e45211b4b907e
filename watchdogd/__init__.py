"""kvm-watchdog: finds and fixes hung libvirt QEMU capability probes."""

try:
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("kvm-watchdog")
    except PackageNotFoundError:  # run from a source tree that is not installed
        __version__ = "0+unknown"
except ImportError:  # pragma: no cover
    __version__ = "0+unknown"
