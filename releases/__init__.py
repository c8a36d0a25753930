"""``vibelux-release``: canary and blue-green releases of the platform API through the proxy's colours."""
