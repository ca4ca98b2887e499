"""Product assembly: a catalog's products are built from reusable element groups.

A `[templates.<name>]` table holds any of a product's fields. A product, or a template, names
the templates it builds on with `extends` (one name or a list), several levels deep. The
templates of a list apply in order, each over the one before, and the table's own fields over
them all. Tables (velocity, installments, channel_nodes, channel_bounds, ...) merge key by key;
every other value, a list included, replaces what it inherits. A template that extends itself,
directly or through others, or a name that is not a template, stops loading with an error that
names the table, the field `extends` and the chain.
"""

from __future__ import annotations

from creditgate.limits import config_file

EXTENDS = "extends"
Error = type[config_file.ConfigFileError]
KNOWN_SHOWN_MAX = 12  # templates an unknown name's error lists
DEPTH_MAX = 32  # templates extending templates: deeper is refused, not a RecursionError


def merged(base: dict, over: dict) -> dict:
    """`over` on top of `base`: tables key by key, anything else replaced."""
    result = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def _names(value, path: str, kind: Error, name: str) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or \
            not all(isinstance(item, str) and item for item in names):
        raise kind(path, name, EXTENDS, "names a template, or a non-empty list of templates")
    return names


class Assembler:
    """Resolves the `extends` of every table against the catalog's templates, once each;
    errors in a template are `template_error`s (they name it as a template)."""

    def __init__(self, path: str, templates: dict, template_error: Error):
        self.path, self.templates, self.error = path, templates, template_error
        self.done: dict[str, dict] = {}

    def template(self, name: str, chain: tuple[str, ...]) -> dict:
        if name in chain:
            cycle = " -> ".join((*chain[chain.index(name):], name))
            raise self.error(self.path, chain[-1], EXTENDS, f"a cycle: {cycle}")
        if len(chain) >= DEPTH_MAX:
            raise self.error(self.path, chain[-1], EXTENDS,
                             f"templates nest more than {DEPTH_MAX} levels deep")
        if name not in self.done:
            table = self.templates[name]
            if not isinstance(table, dict):
                raise self.error(self.path, name, None,
                                 f"Expected `object`, got `{type(table).__name__}`")
            self.done[name] = self.table(table, self.error, name, (*chain, name))
        return self.done[name]

    def table(self, table: dict, kind: Error, name: str, chain: tuple[str, ...] = ()) -> dict:
        """`table` with what it extends applied under it, and without `extends`."""
        if EXTENDS not in table:
            return table
        result: dict = {}
        for parent in _names(table[EXTENDS], self.path, kind, name):
            if parent not in self.templates:
                names = sorted(self.templates)
                known = ", ".join(names[:KNOWN_SHOWN_MAX]) + \
                    (f", ... ({len(names)} in all)" if len(names) > KNOWN_SHOWN_MAX else "")
                raise kind(self.path, name, EXTENDS,
                           f"unknown template {parent!r} (templates: {known})")
            result = merged(result, self.template(parent, chain))
        own = {key: value for key, value in table.items() if key != EXTENDS}
        return merged(result, own)


def assemble(path: str, templates, products: dict, product_error: Error,
             template_error: Error) -> dict[str, dict]:
    """Each product's table with its templates applied. Every template is resolved, used or
    not, so a broken one is found before a product comes to use it."""
    if not isinstance(templates, dict):
        raise product_error(path, None, "templates", "[templates.<name>] tables expected")
    assembler = Assembler(path, templates, template_error)
    for name in templates:
        assembler.template(name, ())
    return {product_id: assembler.table(table, product_error, product_id)
            if isinstance(table, dict) else table for product_id, table in products.items()}
