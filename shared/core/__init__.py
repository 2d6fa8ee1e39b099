"""The pure core: plain data in, findings out. Evaluation, state transitions, the plan of a
subscription, the table layout and entity shapes, keys and ids, the exemption rules, events, errors
and times. It imports nothing outside itself and no SDK (``tests/unit/test_architecture.py``)."""
