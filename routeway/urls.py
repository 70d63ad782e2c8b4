"""What an upstream URL may hold, for the resources (ModelBackend.spec.url) and the ProxyConfig
alike: the proxy reads hand-written ProxyConfigs (`routeway proxy --config`) too, and must refuse
there what validation refuses in a resource, without importing the resource models."""

from __future__ import annotations

import re

# http(s), a host without userinfo (no `@` before the path), then a path: no query, no fragment.
# The proxy appends `/chat/completions` and the like to the URL, so a query or fragment would
# end up in the middle of the upstream path; and a URL is rendered into ConfigMaps and shown on
# the admin port, so a credential in it (`user:password@`, `?key=...`) would leak.
URL_PATTERN = r"^https?://[^\s/?#@]+(/[^\s?#]*)?$"
URL_CREDENTIAL_HINT = "put the credential in apiKeySecretRef"
URL_USERINFO_MESSAGE = f"must not contain user:password@; {URL_CREDENTIAL_HINT}"
URL_QUERY_MESSAGE = (
    "must not contain a query string or fragment (?... or #...): the API path is appended to the "
    f"url, and a key in a query would be rendered into ConfigMaps; {URL_CREDENTIAL_HINT}"
)
_USERINFO = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#\s]*@")


def check_url(url: str) -> str:
    if not re.match(URL_PATTERN, url):
        if _USERINFO.match(url):
            raise ValueError(URL_USERINFO_MESSAGE)
        if "?" in url or "#" in url:
            raise ValueError(URL_QUERY_MESSAGE)
        raise ValueError("must be an http:// or https:// URL without spaces, e.g. http://vllm.ml.svc:8000/v1")
    return url


def check_proxy_url(url: str) -> str:
    """The ProxyConfig's rule, looser than the resource's by one thing: userinfo is kept there
    (a hand-written config may use it for Basic auth; /config redacts it). A query or fragment
    would land in the middle of the upstream path, so it is refused there too."""
    if "?" in url or "#" in url:
        raise ValueError(URL_QUERY_MESSAGE)
    return url
