"""Helpers shared by the tests: fakes checked against the SDKs, loopback servers, bundle readers."""
