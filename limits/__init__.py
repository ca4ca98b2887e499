"""The limit model: catalog, limit tree, velocity windows, key naming, the Lua scripts
and the thin async client that calls them."""
