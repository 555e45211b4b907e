"""Config texts the tests share: the public contract's own example (which is also the default)."""

CONTRACT_EXAMPLE = """\
interval: 5s
dry_run: false
state_dir: /var/lib/kvm-watchdog
events: auto
libvirt:
  uri: qemu:///system
  probe_dirs: [/var/lib/libvirt/qemu]
  cache_dir: /var/cache/libvirt/qemu/capabilities
  restart_command: auto
detect:
  probe_hung_after: 60s
  stale_dir_after: 10m
latency:
  enabled: true
  every: 60s
  timeout: 30s
  slow: 5s
policies:
  - name: kill-hung-probes
    on: probe_hung
    do: [kill_probe]
  - name: reset-after-repeated-hangs
    on: probe_hung
    times: 3
    within: 1h
    do: [quarantine_cache, restart_libvirt]
limits:
  actions: 20
  per: 1h
"""
