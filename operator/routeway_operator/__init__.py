"""The kopf adapter: watches Routeway resources and keeps gateways serving them."""
