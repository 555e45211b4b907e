#!/bin/sh
# The alternative an operator writes by hand, run from cron once a minute:
#   * * * * * root /usr/local/sbin/shell_watchdog.sh qemu:///system
# If domcapabilities does not answer within 30 s, kill everything that looks like a
# probe. (Note what it gets wrong: it adds a hung call to libvirt's queue each
# minute, and `pgrep -f qmp-` matches any process that merely names such a dir.)
uri="${1:-qemu:///system}"
if ! timeout 30 virsh -c "$uri" domcapabilities >/dev/null 2>&1; then
    pids=$(pgrep -f 'qmp-[A-Za-z0-9]{6}/qmp')
    [ -n "$pids" ] && kill -9 $pids
    logger -t shell-watchdog "domcapabilities hung; killed: $pids" 2>/dev/null || true
fi
