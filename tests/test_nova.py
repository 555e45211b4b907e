"""The fleet's scheduler told, against a real OpenStack nova: a host whose probe hangs gets no builds until it ends.

Debian 12's own Zed packages make a one-node cloud in a booted container (harness/openstack.py, nova_setup.sh):
keystone, glance, placement, nova's API, conductor, scheduler and compute (libvirt driver, virt_type qemu), with
MariaDB and RabbitMQ, on a loopback of the container's own. kvm-watchdog is installed from its .deb, with the
shipped `nova-compute` hook on `vm_starts_blocked` (run by the hook runner: the daemon's unit has no network).
The story holds the hang with an alert-only policy, so its window is the test's to end, as an operator's would be.

What it leaves out: neutron. Servers are made with `--nic none` (compute API 2.37), and their state is read from
nova's own cell databases (cell0 holds what was never scheduled): nova-api asks the network service for security
groups on every `server show`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import pytest
from harness.box import Box, arm, events, install
from harness.hosts import HOSTS, NOVA_HOST
from harness.nspawn import ensure_image
from harness.wait import wait_for

HARNESS = Path(__file__).resolve().parent / "harness"
ADMIN = "set -a; . /root/admin.env; set +a; "
REASON = "kvm-watchdog: VM starts blocked (probe_hung)"

pytestmark = [
    pytest.mark.xdist_group(
        "nova"
    ),  # one boot for the module's tests: one worker (make matrix runs hosts side by side)
    pytest.mark.system,
    pytest.mark.matrix,
    pytest.mark.skipif(
        not (shutil.which("systemd-nspawn") and shutil.which("debootstrap") and shutil.which("dpkg-buildpackage")),
        reason="systemd-nspawn, debootstrap or dpkg-buildpackage missing (scripts/install-deps)",
    ),
]

OPERATOR_CONFIG = r"""
import yaml
path = "/etc/kvm-watchdog/config.yaml"
config = yaml.safe_load(open(path))
config.setdefault("detect", {})["probe_hung_after"] = "10s"
config["policies"] = [{"name": "tell", "on": "probe_hung", "do": ["alert"]}]
config["hooks"] = [{
    "name": "tell-nova",
    "on": "vm_starts_blocked",
    "run": ["/usr/share/kvm-watchdog/hooks/nova-compute"],
    "timeout": "60s",
}]
yaml.safe_dump(config, open(path, "w"), sort_keys=False)
"""


@pytest.fixture
def cloud(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    host = HOSTS[NOVA_HOST]
    box = Box(
        ensure_image(host),
        binds_ro=[(str(dist), "/mnt/pkg"), (str(HARNESS), "/mnt/harness")],
        workdir=tmp_path_factory.mktemp("nova"),
        private_network=True,
    )
    box.host = host
    box.boot()
    try:
        box.run(
            "sh /mnt/harness/nova_setup.sh > /root/nova-setup.log 2>&1 || (tail -n 40 /root/nova-setup.log; exit 1)",
            timeout=900,
            check=True,
        )
        yield box
    finally:
        box.poweroff()


def openstack(box: Box, command: str, timeout: float = 120) -> str:
    return box.run(ADMIN + "openstack " + command, timeout=timeout, check=True).stdout


def compute_service(box: Box) -> Dict[str, Any]:
    [service] = json.loads(openstack(box, "compute service list --service nova-compute --long -f json"))
    return dict(service)


def service_table(box: Box) -> str:
    return openstack(box, "compute service list --service nova-compute --long").strip()


def instance(box: Box, name: str) -> Optional[Dict[str, str]]:
    """A server as nova's cells hold it: cell0 (never scheduled) or cell1; its state, its host, its fault."""
    for db in ("nova_cell0", "nova"):
        out = box.run(
            f"mysql -N -B {db} -e \"select i.vm_state, ifnull(i.host, ''), ifnull(f.message, '') from instances i "
            f"left join instance_faults f on f.instance_uuid = i.uuid where i.display_name = '{name}' and i.deleted = 0\""
        ).stdout.strip()
        if out:
            state, host, fault = (out.splitlines()[0].split("\t") + ["", "", ""])[:3]
            return {"cell": db, "vm_state": state, "host": host, "fault": fault}
    return None


def settled(box: Box, name: str, states: Tuple[str, ...]) -> Callable[[], Optional[Dict[str, str]]]:
    """A wait's condition: the server, once nova's cells hold it in one of `states`."""

    def check() -> Optional[Dict[str, str]]:
        found = instance(box, name)
        return found if found is not None and found["vm_state"] in states else None

    return check


def create_server(box: Box, name: str) -> None:
    """POST /servers (answered 202); OSC's own `server show` after it fails without neutron, so its exit is not the
    answer: the server is looked for in nova's cells."""
    box.run(
        ADMIN + f"openstack --os-compute-api-version 2.37 server create --flavor tiny --image tiny --nic none {name}",
        timeout=120,
    )


def at_us(event: Dict[str, str]) -> int:
    return int(event["__REALTIME_TIMESTAMP"])


def test_nova_sends_no_build_to_a_host_whose_probe_hangs_and_sends_them_again_once_it_ends(cloud: Box) -> None:
    box = cloud
    install(box)
    box.run(f"python3 -c '{OPERATOR_CONFIG}'", check=True)
    box.run("install -m 600 /root/admin.env /etc/kvm-watchdog/nova-hook.env", check=True)
    box.run(
        "kvm-watchdog config check && systemctl enable --now kvm-watchdog && systemctl restart kvm-watchdog", check=True
    )
    wait_for(lambda: events(box, "started"), 60, "the watchdog to start")
    host = box.run("hostname").stdout.strip()
    before = compute_service(box)
    assert before["Host"] == host and before["Status"] == "enabled" and before["State"] == "up", before
    table_before = service_table(box)

    # the incident: libvirt's capability probe hangs
    arm(box, "hang-init")
    box.run("setsid -f virsh -c qemu:///system domcapabilities >/dev/null 2>&1 </dev/null")
    [opened] = wait_for(lambda: events(box, "probe_hung", KVMWD_STATE="open"), 90, "probe_hung to open")
    [told] = wait_for(
        lambda: events(box, "hook", KVMWD_HOOK="tell-nova", KVMWD_STATE="open", KVMWD_RESULT="ok"),
        120,
        "the nova-compute hook to disable the host",
    )
    during = compute_service(box)
    assert during["Status"] == "disabled" and during["Disabled Reason"] == REASON, during
    table_during = service_table(box)
    to_disabled_s = (at_us(told) - at_us(opened)) / 1e6

    # a build in that window lands nowhere: this host was the only one
    create_server(box, "while-blocked")
    blocked = wait_for(settled(box, "while-blocked", ("error", "active")), 120, "the build to end")
    assert blocked["vm_state"] == "error" and blocked["host"] == "", blocked
    assert "No valid host was found" in blocked["fault"], blocked

    # the hang ends (an operator kills the probe; the next probe works): the host takes builds again
    arm(box, "none")
    box.run('for f in /var/lib/libvirt/qemu/qmp-*/qmp.pid; do kill -9 "$(cat "$f")"; done', check=True)
    assert box.run("virsh -c qemu:///system domcapabilities >/dev/null", timeout=120).returncode == 0
    wait_for(
        lambda: events(box, "hook", KVMWD_HOOK="tell-nova", KVMWD_STATE="resolved", KVMWD_RESULT="ok"),
        120,
        "the nova-compute hook to enable the host again",
    )
    after = compute_service(box)
    assert after["Status"] == "enabled" and not after["Disabled Reason"], after
    table_after = service_table(box)
    create_server(box, "after")
    landed = wait_for(settled(box, "after", ("active", "error")), 180, "the build to end")
    assert landed["vm_state"] == "active" and landed["host"] == host, landed

    results = os.environ.get("KVMWD_NOVA_RESULTS")
    if results:
        Path(results).write_text(
            json.dumps(
                {
                    "nova": box.run("dpkg-query -W -f '${Version}' nova-compute").stdout,
                    "service_list": {"before": table_before, "during": table_during, "after": table_after},
                    "probe_hung_open_to_disabled_s": round(to_disabled_s, 2),
                    "while_blocked": blocked,
                    "after": landed,
                    "taken": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                indent=1,
            )
            + "\n"
        )
    print("\n".join(["before:", table_before, "during:", table_during, "after:", table_after]))
    print(f"probe_hung opened -> nova-compute disabled: {to_disabled_s:.2f} s")
