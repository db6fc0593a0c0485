"""The loopback DNS server of test_dns.py, as a fixture for every test of the cluster."""

from tests.cluster.test_dns import dns_server  # noqa: F401
