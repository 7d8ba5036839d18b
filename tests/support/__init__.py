"""Builders, servers and fakes that the test tiers share."""
