"""
The options reference in docs/ is generated from the code (the
C{rpisensor-options} directive of C{docs/_ext/rpisensor_options.py}): every
command has its page, every option of every command is rendered with its help
and default, and every option the pages and the README name exists. So an
option added without a help text, a command added without a page, or an
option removed but still described, fails here.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import rpisensor_options  # noqa: E402

#: Options of other programs the pages show: pip's, sphinx-build's, docker's and systemctl's.
OTHER_PROGRAMS = {"config-settings", "keep-going", "name", "restart", "rm", "now"}


def pages() -> list[Path]:
    """The README and every page of the documentation."""
    return [ROOT / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)]


def rendered(command) -> str:
    """A command's reference as text, as the directive renders it."""
    return "\n".join(node.astext() for node in rpisensor_options.option_nodes(command))


def long_options(options_class: type[usage.Options]) -> set[str]:
    """Every long option Twisted's parser takes for this class, as C{--help} lists them."""
    return {spelling.rstrip("=") for spelling in options_class().longOpt}


class CommandsTests(SynchronousTestCase):
    def test_every_command(self) -> None:
        """The generator knows twistd's roles and the rpisensor command's sub-commands."""
        from rpisensor.app import cli, tap

        expected = [role.name for role in tap.ROLES] + [entry[0] for entry in cli.Options.subCommands]
        self.assertEqual(list(rpisensor_options.commands()), expected)
        self.assertIn("serve", expected)
        self.assertIn("query", expected)

    def test_every_command_has_its_page(self) -> None:
        """Each command's options are rendered on exactly one page."""
        directives: dict[str, list[str]] = {}
        for page in pages():
            for name in re.findall(r"^```\{rpisensor-options\} (\S+)\s*$", page.read_text(encoding="utf-8"), re.M):
                directives.setdefault(name, []).append(str(page.relative_to(ROOT)))
        for name in rpisensor_options.commands():
            self.assertEqual(len(directives.get(name, [])), 1, f"{name}: rendered on {directives.get(name)}")
        self.assertEqual(set(directives) - set(rpisensor_options.commands()), set())


class RenderingTests(SynchronousTestCase):
    def test_every_option_of_every_command(self) -> None:
        """Every option Twisted's parser takes is rendered, with its short form and its help."""
        for command in rpisensor_options.commands().values():
            text = rendered(command)
            options = command.options()
            for name in long_options(command.options):
                self.assertIn(f"--{name}", text, f"{command.name}: --{name} is not rendered")
                doc = " ".join((options.docs.get(name) or "").split())
                self.assertTrue(doc, f"{command.name}: --{name} has no help text")
                self.assertIn(doc.split("Example")[0].strip(), " ".join(text.split()))
            for short, long in options.synonyms.items():
                if len(short) == 1 and short != long:
                    self.assertIn(f"--{long}=, -{short}", text)

    def test_defaults(self) -> None:
        """Each option that has a default says it."""
        rendered_defaults = 0
        for command in rpisensor_options.commands().values():
            text = rendered(command)
            for option in rpisensor_options.options_of(command.options):
                if option.default is not None:
                    short = f", -{option.short}" if option.short else ""
                    self.assertIn(f"{option.spelling}{short} (default: {option.default})", text)
                    rendered_defaults += 1
        serve = rendered(rpisensor_options.commands()["serve"])
        self.assertIn("--poll-interval= (default: 0.1)", serve)
        self.assertGreater(rendered_defaults, 50)

    def test_synopsis_and_description(self) -> None:
        """How the command is typed, and its description, come first."""
        query = rendered(rpisensor_options.commands()["query"])
        self.assertTrue(query.startswith("Usage: rpisensor query [options] ENDPOINT MESSAGE [MESSAGE ...]"), query)
        self.assertIn("Connect to a sensor server", query)
        serve = rendered(rpisensor_options.commands()["serve"])
        self.assertTrue(serve.startswith("Usage: twistd -n rpisensor serve [options]"), serve)

    def test_an_added_option_is_rendered(self) -> None:
        """An option added to a role's class is in its reference, with nothing else to write."""
        from rpisensor.roles.serve.options import ServeOptions

        class Extended(ServeOptions):
            optParameters = [["brand-new", None, "7", "A setting no page describes yet."]]
            optFlags = [["also-new", None, "A flag."]]

        command = rpisensor_options.Command("serve", "twistd -n rpisensor serve", Extended, "")
        text = rendered(command)
        self.assertIn("--brand-new= (default: 7)", text)
        self.assertIn("A setting no page describes yet.", text)
        self.assertIn("--also-new", text)
        self.assertIn("--listen=", text)


class NamedOptionsTests(SynchronousTestCase):
    def test_options_named_on_the_pages_exist(self) -> None:
        """
        Every C{--option} the README and the pages name is an option of a
        command, of twistd, of a benchmark script, or of another program a
        page shows (pip, sphinx-build, docker, systemctl): a removed option still described
        fails here.
        """
        from twisted.scripts.twistd import ServerOptions

        known = set().union(*(long_options(c.options) for c in rpisensor_options.commands().values()))
        known |= long_options(ServerOptions)
        for script in (ROOT / "bench").glob("*.py"):
            known |= set(re.findall(r"[\"'/ ]--([a-z][a-z0-9-]*[a-z0-9])", script.read_text(encoding="utf-8")))
        known |= OTHER_PROGRAMS
        unknown = {}
        for page in pages():
            text = page.read_text(encoding="utf-8")
            for name in re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*[a-z0-9])", text):
                if name not in known:
                    unknown.setdefault(name, str(page.relative_to(ROOT)))
        self.assertEqual(unknown, {})
