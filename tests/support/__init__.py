"""Helpers shared by the tests: configs, servers, Redis."""
