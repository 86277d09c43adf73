"""Third-party files the console's pages load, installed from the npm registry at set-up
(`make vendor`: deploy/vendor.py) and served by the console, so that nothing comes from a
CDN. vendor.json pins each: its version, licence, npm integrity and files' sha256."""
