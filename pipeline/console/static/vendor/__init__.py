"""Third-party files the console's pages load (vendor.json names each, its version, licence
and checksum): data installed with the console, so that nothing comes from a CDN."""
