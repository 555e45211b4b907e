"""kvm-watchdog: finds and fixes hung libvirt QEMU capability probes."""

# The one source of the version: the build reads it (setup.cfg's attr:), so every Python from 3.7
# (no importlib.metadata) and an uninstalled source tree say the same, and the latency child that
# imports this package once a minute pays nothing for it.
__version__ = "0.2.0"
