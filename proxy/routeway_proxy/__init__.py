"""The aiohttp data plane: serves a `ProxyConfig`, knows nothing of Kubernetes objects."""
