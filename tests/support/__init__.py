"""Helpers and fixture builders shared by the tests (``from tests.support.<module> import ...``)."""
