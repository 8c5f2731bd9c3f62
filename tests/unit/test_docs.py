"""The documentation (``docs/*.md`` and the README) stays true to the code.

- every route a page names (``GET /v1/engines/{id}``, or a ``curl`` example's method and URL)
  is served by the server app, and every route the app serves is named in the docs;
- every ``ENGINEHOUSE_*`` name a page mentions is a field of ``Settings``, and every field has its
  row in docs/configuration.md, with the default the code has;
- every ``enginehouse …`` command a page shows exists in the command line, with the options shown,
  and every command is shown in docs/cli.md;
- every relative link between pages resolves, anchors included.

The app is built, never started: routes are matched the way a request would be.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
from starlette.routing import BaseRoute, Match

from enginehouse.cli.main import app as cli_app
from enginehouse.server import create_app
from enginehouse.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
CONFIGURATION = DOCS / "configuration.md"
CLI_PAGE = DOCS / "cli.md"

# ENGINEHOUSE_* names the docs may mention that are not server or CLI settings, and why.
NOT_SETTINGS = {
    "ENGINEHOUSE_TEST_DATABASE_URL": "the PostgreSQL database of the test suite (tests/databases.py)",
    "ENGINEHOUSE_REPLICA_SECRET": "a replica process's own secret, set by its provider (enginehouse/replicaauth.py)",
    "ENGINEHOUSE_ARTIFACT_CACHE": "where a Ray node keeps fetched artifacts, read from the node's own environment "
                                  "(enginehouse/runtime/artifacts.py)",
}
# Routes FastAPI adds for its own pages, not worth a line in the docs.
UNDOCUMENTED_ROUTES = {"/docs/oauth2-redirect"}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


# -- reading the pages ---------------------------------------------------------------------------

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`\n]+)`")


def read(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def fenced_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def prose(text: str) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", text)


def code_lines(text: str) -> list[str]:
    """Every command-like piece of a page: the logical lines of its code blocks (continuation
    backslashes and multi-line quotes joined) and its inline code spans."""
    lines: list[str] = []
    for block in fenced_blocks(text):
        buffer = ""
        for line in block.replace("\\\n", " ").splitlines():
            buffer = f"{buffer} {line.strip()}" if buffer else line.strip()
            if buffer.count("'") % 2:  # a quoted body that runs over several lines
                continue
            lines.append(buffer)
            buffer = ""
        if buffer:
            lines.append(buffer)
    lines.extend(INLINE_CODE.findall(prose(text)))
    return lines


def where(page: Path) -> str:
    return str(page.relative_to(ROOT))


# -- routes --------------------------------------------------------------------------------------

ROUTE_MENTION = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE|HEAD)\s+(/[A-Za-z0-9_\-./{}$]*)")
URL = re.compile(r"^https?://[^/\s]+(/\S*)?$")


@dataclass(frozen=True)
class RouteRef:
    method: str
    path: str  # concrete: path parameters filled in
    written: str  # as the page has it


def concrete(path: str) -> str:
    """``/v1/engines/{id}/events?after=2`` → ``/v1/engines/x/events``."""
    path = path.split("?", 1)[0].split("#", 1)[0].rstrip(".,;:")
    return re.sub(r"\{[^}/]*\}", "x", path) or "/"


def curl_routes(line: str) -> Iterator[RouteRef]:
    """The method and path of a ``curl`` command line."""
    if not line.startswith("curl "):
        return
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return
    method, has_body, path = None, False, None
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else ""
        if token in ("-X", "--request"):
            method = following
        elif token in ("-d", "--data", "--data-raw", "--data-binary", "--json") or token.startswith("-d"):
            has_body = True
        elif match := URL.match(token):
            path = match.group(1) or "/"
    if path is not None:
        method = method or ("POST" if has_body else "GET")
        yield RouteRef(method.upper(), concrete(path), line)


def documented_routes(pages: list[Path]) -> list[tuple[Path, RouteRef]]:
    found = []
    for page in pages:
        text = read(page)
        for method, path in ROUTE_MENTION.findall(text):
            found.append((page, RouteRef(method, concrete(path), f"{method} {path}")))
        for line in code_lines(text):
            found.extend((page, ref) for ref in curl_routes(line))
    return found


def scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": [],
            "query_string": b""}


def served(routes: list[BaseRoute], method: str, path: str) -> bool:
    return any(route.matches(scope(method, path))[0] is Match.FULL for route in routes)


def flat_routes(routes: list[Any]) -> Iterator[Any]:
    """Every route with a path, through routers FastAPI includes as one entry."""
    for route in routes:
        if hasattr(route, "path"):
            yield route
        elif hasattr(route, "original_router"):
            yield from flat_routes(route.original_router.routes)
        elif hasattr(route, "routes"):
            yield from flat_routes(route.routes)


@pytest.fixture(scope="module")
def app_routes(tmp_path_factory: pytest.TempPathFactory) -> list[BaseRoute]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("docs-app"))
    return list(create_app(settings).router.routes)


def test_every_route_the_docs_name_is_served(app_routes: list[BaseRoute]) -> None:
    refs = documented_routes(PAGES)
    assert len(refs) > 50, "the pages name hardly any route: is the route pattern still right?"
    missing = sorted({f"{where(page)}: {ref.written}" for page, ref in refs
                      if not served(app_routes, ref.method, ref.path)})
    assert not missing, "routes the docs name that the server does not serve:\n" + "\n".join(missing)


def test_every_served_route_is_documented(app_routes: list[BaseRoute]) -> None:
    routes = [r for r in flat_routes(app_routes) if r.path not in UNDOCUMENTED_ROUTES]
    assert len(routes) > 20, "could not list the app's routes"
    refs = [ref for _page, ref in documented_routes(PAGES)]
    undocumented = sorted(
        f"{method} {route.path}"
        for route in routes
        for method in sorted(set(getattr(route, "methods", None) or ()) & set(METHODS))
        if not any(ref.method == method and route.matches(scope(method, ref.path))[0] is Match.FULL
                   for ref in refs)
    )
    assert not undocumented, "routes no page names:\n" + "\n".join(undocumented)


# -- settings ------------------------------------------------------------------------------------

SETTING = re.compile(r"\bENGINEHOUSE_[A-Z0-9][A-Z0-9_]*")


def setting_names() -> set[str]:
    return {f"ENGINEHOUSE_{name.upper()}" for name in Settings.model_fields}


def unknown_settings(text: str) -> set[str]:
    return {name for name in SETTING.findall(text) if name not in setting_names() | set(NOT_SETTINGS)}


def test_every_setting_the_docs_name_exists() -> None:
    unknown = sorted(f"{where(page)}: {name}" for page in PAGES for name in unknown_settings(read(page)))
    assert not unknown, "ENGINEHOUSE_* names that are not settings:\n" + "\n".join(unknown)


def expected_default(name: str) -> str | None:
    """The default as configuration.md writes it; None for an empty string (written 'empty: …')."""
    default = Settings.model_fields[name].default
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, Path):
        try:
            return "~/" + str(default.relative_to(Path.home()))
        except ValueError:
            return str(default)
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    if default == "":
        return None
    return str(default)


def test_every_setting_is_documented_with_its_default() -> None:
    rows = {}
    for line in prose(read(CONFIGURATION)).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `ENGINEHOUSE_") and len(cells) >= 3:
            rows[cells[0].strip("`")] = cells[1]
    problems = []
    for field in Settings.model_fields:
        variable = f"ENGINEHOUSE_{field.upper()}"
        if variable not in rows:
            problems.append(f"{variable} has no row in the settings table")
            continue
        expected, cell = expected_default(field), rows[variable]
        if expected is None:
            if not cell.startswith("empty"):
                problems.append(f"{variable}: default is empty, the table says {cell!r}")
        elif not cell.startswith(f"`{expected}`"):
            problems.append(f"{variable}: default is {expected!r}, the table says {cell!r}")
    assert not problems, "docs/configuration.md:\n" + "\n".join(problems)


# -- the command line ----------------------------------------------------------------------------

# `enginehouse` followed by words, in a code span or a code block's line; not `~/.enginehouse`,
# `enginehouse.server` or `enginehouse:` (a log line).
INVOCATION = re.compile(r"(?<![\w.~-])enginehouse[ \t]+([^|;&#`)\n]*)")
COMMAND_WORD = re.compile(r"^[a-z][a-z0-9-]*$")
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


@dataclass(frozen=True)
class Invocation:
    path: tuple[str, ...]  # the command words after `enginehouse`
    options: tuple[str, ...]
    written: str


def cli_root() -> Any:
    """The command line as click sees it (Typer may bring its own copy of click, so groups are
    told apart by their ``commands``, not by class)."""
    return typer.main.get_command(cli_app)


def subcommands(command: Any) -> dict[str, Any] | None:
    commands = getattr(command, "commands", None)
    return commands if isinstance(commands, dict) else None


def invocations(text: str) -> Iterator[Invocation]:
    for line in code_lines(text):
        for match in INVOCATION.finditer(line):
            rest = match.group(1)
            words: list[str] = []
            for token in rest.split():
                if not COMMAND_WORD.match(token):
                    break
                words.append(token)
            options = tuple(OPTION.findall(rest))
            yield Invocation(tuple(words), options, f"enginehouse {rest.strip()}")


def resolve(root: Any, invocation: Invocation) -> tuple[Any, tuple[str, ...], str | None]:
    """(the command the words reach, its path, a problem or None). Words past a command that
    has no subcommands are its arguments."""
    command, path = root, ()
    for word in invocation.path:
        commands = subcommands(command)
        if commands is None:
            break
        sub = commands.get(word)
        if sub is None:
            return command, path, f"`enginehouse {' '.join((*path, word))}`: no such command"
        command, path = sub, (*path, word)
    names = {"--help"} | {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
    unknown = [option for option in invocation.options if option not in names]
    if unknown:
        return command, path, f"`enginehouse {' '.join(path)}` has no option {', '.join(unknown)}"
    return command, path, None


def cli_problems(text: str) -> list[str]:
    root = cli_root()
    return [f"{problem} (in `{inv.written}`)" for inv in invocations(text)
            if (problem := resolve(root, inv)[2]) is not None]


def test_every_command_the_docs_show_exists() -> None:
    shown = [inv for page in PAGES for inv in invocations(read(page))]
    assert len(shown) > 30, "the pages show hardly any command: is the pattern still right?"
    problems = [f"{where(page)}: {problem}" for page in PAGES for problem in cli_problems(read(page))]
    assert not problems, "commands the docs show that do not exist:\n" + "\n".join(problems)


def leaf_commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    commands = subcommands(command)
    if commands is None:
        yield path
        return
    for name, sub in commands.items():
        yield from leaf_commands(sub, (*path, name))


def test_every_command_is_in_the_cli_page() -> None:
    root = cli_root()
    shown = {resolve(root, inv)[1] for inv in invocations(read(CLI_PAGE))}
    missing = sorted(" ".join(path) for path in leaf_commands(root) if path not in shown)
    assert not missing, "commands docs/cli.md does not show: " + ", ".join(missing)


# -- links ---------------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces to '-',
    a repeated one suffixed -1, -2, …"""
    anchors: set[str] = set()
    for line in prose(read(page)).splitlines():
        if match := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1)).replace("`", "").lower()
            anchor = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
            unique, n = anchor, 0
            while unique in anchors:
                n += 1
                unique = f"{anchor}-{n}"
            anchors.add(unique)
    return anchors


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(read(page))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in heading_anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.name}")
    return broken


def test_every_link_between_pages_resolves() -> None:
    broken = [f"{where(page)}: {problem}" for page in PAGES for problem in broken_links(page)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_docs_index_lists_every_page() -> None:
    index = read(DOCS / "README.md")
    missing = [page.name for page in DOCS.glob("*.md") if page.name != "README.md" and f"({page.name})" not in index]
    assert not missing, f"docs/README.md does not link to: {', '.join(missing)}"


# -- the checks themselves catch what they should --------------------------------------------

def test_the_checks_catch_a_wrong_route_setting_command_and_link(
    app_routes: list[BaseRoute], tmp_path: Path
) -> None:
    page = tmp_path / "wrong.md"
    page.write_text(
        "`GET /v1/engines/{id}/logs` and\n\n"
        "```bash\ncurl -s -X PATCH http://127.0.0.1:8400/v1/engines/$ENGINE_ID\n"
        "enginehouse engines restart demo\nenginehouse engines list --colour\n```\n\n"
        "Set `ENGINEHOUSE_GPU_COUNT`. See [there](missing.md) and [here](#nowhere).\n\n# Here\n"
    )
    refs = [ref for _page, ref in documented_routes([page])]
    assert [(r.method, r.path) for r in refs if not served(app_routes, r.method, r.path)] == [
        ("GET", "/v1/engines/x/logs"), ("PATCH", "/v1/engines/$ENGINE_ID")]
    assert unknown_settings(read(page)) == {"ENGINEHOUSE_GPU_COUNT"}
    problems = cli_problems(read(page))
    assert len(problems) == 2
    assert "no such command" in problems[0] and "--colour" in problems[1]
    assert broken_links(page) == ["missing.md: no such file", "#nowhere: no heading #nowhere in wrong.md"]
    assert "here" in heading_anchors(page)
