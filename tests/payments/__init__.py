"""Contract tests of the payment providers, each through its real SDK against its local fake."""
