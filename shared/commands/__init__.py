"""The ``clientcert-audit`` commands, one module each: ``run``, ``report``, ``exempt`` and
``subscriptions``; :mod:`.common` holds the exit codes and what every command shares. The parser
that wires them is :mod:`shared.cli`.
"""
