"""For tools that still call setup.py (openEuler 20.03's %py3_build): the metadata is setup.cfg's."""

from setuptools import setup

setup()
