"""Run by a host's own python3: import and compile every module of the installed watchdogd.

Prints the Python version and the number of modules. A module that needs the optional
Prometheus client may fail to import only for want of it (the metrics outlets are off
without it, and `config check` says so); any other failure is a failure.
"""

import importlib
import importlib.util
import os
import pkgutil
import platform
import py_compile
import tempfile

import watchdogd

names = [m.name for m in pkgutil.walk_packages(watchdogd.__path__, "watchdogd.")]
out = tempfile.mkdtemp()
for name in names:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None, name
    py_compile.compile(spec.origin, cfile=os.path.join(out, name + ".pyc"), doraise=True)
    if name.endswith("__main__"):
        continue  # importing it runs the CLI
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != "prometheus_client":
            raise
print(platform.python_version(), len(names))
