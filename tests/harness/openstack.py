"""A one-node OpenStack nova for the scheduler story: Debian 12's own Zed packages in the bookworm image.

The image step installs MariaDB, RabbitMQ, keystone, glance, placement and nova (API, conductor, scheduler,
compute with the libvirt driver) and keeps every one of them from starting at boot: they are configured in the
booted container (`nova_setup.sh`), which has a loopback of its own, so nothing listens on the host.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import IO

from .chroot import in_chroot

PACKAGES = (
    "mariadb-server",
    "python3-pymysql",
    "rabbitmq-server",
    "keystone",
    "glance-api",
    "placement-api",
    "nova-api",
    "nova-conductor",
    "nova-scheduler",
    "nova-compute",
    "nova-compute-qemu",
    "python3-openstackclient",
    "crudini",
)
# started by nova_setup.sh once configured, never at the image's boot
UNITS = (
    "mariadb",
    "rabbitmq-server",
    "epmd",
    "keystone",
    "glance-api",
    "placement-api",
    "nova-api",
    "nova-api-metadata",
    "nova-conductor",
    "nova-scheduler",
    "nova-compute",
    "libvirt-guests",
)


def build_nova(root: Path, log: IO[str]) -> None:
    root.chmod(0o755)  # a system's /: mysql and man, not only root, walk it (the image began as a 0700 temp dir)
    in_chroot(
        root,
        "apt-get update -q && apt-get install -y -q --no-install-recommends "
        + " ".join(PACKAGES)
        + " && apt-get clean && mariadb-install-db --user=mysql >/dev/null",
        log,
    )
    subprocess.run(["systemctl", f"--root={root}", "disable", *UNITS], check=True, stdout=log, stderr=subprocess.STDOUT)
