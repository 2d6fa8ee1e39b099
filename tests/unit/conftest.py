"""Tests below this directory are unit tests: no emulator, no Azurite, no markers.

``make unit`` selects them as ``-m "not integration and not infra"``; a test here that needs the
emulators belongs in ``tests/integration``.
"""
