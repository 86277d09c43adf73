"""The console's pages and assets, installed with it and served by it (no CDN at run time)."""
