"""The servers' OpenAPI documents, as data: `pipeline.serve.apidoc` reads and serves them."""
