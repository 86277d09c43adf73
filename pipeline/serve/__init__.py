"""The HTTP servers for people and gateways: the throttling hook and the review and appeals API."""
