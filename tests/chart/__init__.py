"""Helm chart, Dockerfile and tool-fetching tests."""
