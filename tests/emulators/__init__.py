"""Emulated Azure for the tests: ARM + managed identity (``arm``), Table Storage (``azurite``)."""
