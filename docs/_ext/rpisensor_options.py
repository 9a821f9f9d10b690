"""
The options reference, generated from the code so that it cannot drift: the
directive C{rpisensor-options} renders one command's options straight from
its C{twisted.python.usage.Options} class (its C{optFlags}, C{optParameters}
and C{opt_*} methods, with their help texts and defaults), as C{--help} does.

In a MyST page::

    ```{rpisensor-options} serve
    ```

The commands are the twistd plugin's roles (C{rpisensor.app.tap.ROLES}) and
the C{rpisensor} command's sub-commands (C{rpisensor.app.cli.Options}): a
command added to either table is one more this knows, and
C{tests/test_docs.py} checks that every one of them, and every one of its
options, is in the documentation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Command", "Option", "commands", "options_of", "option_nodes", "setup"]


@dataclass(frozen=True)
class Command:
    """One command a user types: a role of twistd's plugin, or a sub-command of C{rpisensor}."""

    name: str
    #: how it is typed, before its own synopsis: C{twistd -n rpisensor serve}
    invocation: str
    options: type
    summary: str


@dataclass(frozen=True)
class Option:
    """One option as C{--help} knows it."""

    name: str
    short: str | None
    takes_value: bool
    default: str | None
    doc: str

    @property
    def spelling(self) -> str:
        """C{--listen=} for an option that takes a value, C{--subscribe} for a flag."""
        return f"--{self.name}=" if self.takes_value else f"--{self.name}"


def commands() -> dict[str, Command]:
    """Every command, by name, in the order the help lists them."""
    from rpisensor.app import cli, tap

    found = {role.name: Command(role.name, f"twistd -n rpisensor {role.name}", role.options, role.summary)
             for role in tap.ROLES}  # fmt: skip
    for name, _short, options, summary in cli.Options.subCommands:
        found[name] = Command(name, f"rpisensor {name}", options, summary)
    return found


def options_of(options_class: type) -> list[Option]:
    """
    The options of one C{usage.Options} class, as its C{--help} lists them
    (Twisted gathers them from the class and its bases), sorted by name,
    C{--help} and C{--version} last.
    """
    options = options_class()
    short_of = {long: short for short, long in options.synonyms.items() if len(short) == 1 and short != long}
    found = []
    for spelling in options.longOpt:
        name = spelling.rstrip("=")
        default = options.defaults.get(name)
        found.append(Option(
            name=name,
            short=short_of.get(name),
            takes_value=spelling.endswith("="),
            default=None if default is None or not spelling.endswith("=") else str(default),
            doc=" ".join((options.docs.get(name) or "").split()),
        ))  # fmt: skip
    last = ("help", "version")
    return sorted(found, key=lambda option: (last.index(option.name) + 1 if option.name in last else 0, option.name))


#: An option's name in a help text, or a command typed in it.
_CODE = re.compile(r"(--[a-z][a-z0-9-]*[a-z0-9]=?|\bExamples?: .*$)")


def _text_with_code(text: str):
    """A help text as docutils inline nodes: option names and the example as code."""
    from docutils import nodes

    parts = []
    for piece in _CODE.split(text):
        if not piece:
            continue
        if piece.startswith("Example"):
            label, _, example = piece.partition(": ")
            parts += [nodes.Text(f"{label}: "), nodes.literal(text=example)]
        elif _CODE.fullmatch(piece):
            parts.append(nodes.literal(text=piece))
        else:
            parts.append(nodes.Text(piece))
    return parts


def option_nodes(command: Command, target_id=None) -> list:
    """
    The docutils nodes of one command's reference: how it is typed, what it
    does (its C{longdesc}), then a definition list of its options.

    @param target_id: C{target_id(option)}, the id of each option's anchor,
        or L{None} for none.
    """
    from docutils import nodes

    options_class = command.options
    synopsis = getattr(options_class, "synopsis", "[options]")
    usage = nodes.paragraph("", "", nodes.Text("Usage: "), nodes.literal(text=f"{command.invocation} {synopsis}"))
    found: list = [usage]
    if getattr(options_class, "longdesc", None):
        found.append(nodes.paragraph("", "", *_text_with_code(" ".join(options_class.longdesc.split()))))
    listing = nodes.definition_list(classes=["rpisensor-options"])
    for option in options_of(options_class):
        term = nodes.term("", "", nodes.literal(text=option.spelling))
        if option.short:
            term += [nodes.Text(", "), nodes.literal(text=f"-{option.short}")]
        if option.default is not None:
            term += [nodes.Text(" (default: "), nodes.literal(text=option.default), nodes.Text(")")]
        if target_id is not None:
            term["ids"].append(target_id(option))
        item = nodes.definition_list_item("", term, nodes.definition("", nodes.paragraph(
            "", "", *_text_with_code(option.doc or "(no help text)"))))  # fmt: skip
        listing += item
    found.append(listing)
    return found


def _directive():
    from sphinx.util.docutils import SphinxDirective

    class OptionsDirective(SphinxDirective):
        """C{rpisensor-options COMMAND}: that command's options, from its C{usage.Options} class."""

        required_arguments = 1
        has_content = False

        def run(self):
            name = self.arguments[0]
            known = commands()
            if name not in known:
                raise self.error(f"rpisensor-options: no command {name!r}; the commands are: {', '.join(known)}")
            command = known[name]
            std = self.env.get_domain("std")
            program = command.invocation.replace("twistd -n ", "twistd ")

            def target_id(option: Option) -> str:
                label = f"option-{name}-{option.name}"
                std.add_program_option(program, f"--{option.name}", self.env.docname, label)
                return label

            return option_nodes(command, target_id)

    return OptionsDirective


def setup(app):
    app.add_directive("rpisensor-options", _directive())
    return {"parallel_read_safe": True, "parallel_write_safe": True}
