"""Shared foundations every other part may import: errors, config base, asyncio helpers, logging, resources.

Nothing in `monitor.core` imports from the rest of the project.
"""
