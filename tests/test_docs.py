"""Docs that cannot drift: README.md and docs/api.md against the code they describe.

Every CLI subcommand (read from the argparse parser) is in README's command list and in
docs/api.md; every public ``Store`` method and property, every ``zenstore.__all__`` name
and every store option is documented in docs/api.md, with the signature and defaults
the code has; the error tree drawn there is the class hierarchy; README's table names the
main calls; and README's Python example runs.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
from pathlib import Path

import pytest

import zenstore
from zenstore import Store
from zenstore.cli import build_parser
from zenstore.format import StoreConfig

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()
FORMAT = (ROOT / "docs" / "format.md").read_text()

# README's table has one row per main call; the rest are in docs/api.md only
README_TABLE_CALLS = ["create", "open", "add", "upsert", "delete", "get", "search", "search_batch", "rerank",
                      "train", "compact", "verify", "stats", "ids"]


def section(text: str, heading: str) -> str:
    """The body of the markdown section titled ``heading`` (up to the next one as high)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("#").strip() == heading and line.startswith("#"))
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) <= level), len(lines))
    return "\n".join(lines[start + 1 : end])


def fenced(text: str, lang: str = "") -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def code_spans(text: str) -> list[str]:
    """Inline code and fenced blocks: where names are documented (not prose mentions)."""
    without_blocks = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.findall(r"`([^`\n]+)`", without_blocks) + fenced(text, r"\w*")


def documented(name: str, text: str) -> bool:
    word = re.compile(rf"(?<![\w.]){re.escape(name)}\b" if not name.startswith("__") else re.escape(name))
    return any(word.search(code) for code in code_spans(text))


def cli_commands() -> list[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


def public_store_members() -> list[str]:
    return [n for n in vars(Store) if not n.startswith("_")]


def test_the_checks_see_what_they_check():
    assert {"ingest", "search", "verify"} <= set(cli_commands())
    assert {"search", "rerank", "path", "dim"} <= set(public_store_members())
    assert documented("Store", API) and not documented("no_such_name", API)
    assert not documented("search", "the word search in prose")


# --- CLI ----------------------------------------------------------------------------------


def test_every_cli_command_is_in_the_readme_command_list():
    listed = {line.split()[1] for block in fenced(section(README, "Command line"), "bash")
              for line in block.splitlines() if line.startswith("zenstore ")}
    assert listed == set(cli_commands())


def test_every_cli_command_is_in_api_md():
    body = section(API, "Command line")
    listed = set(re.findall(r"^### `zenstore (\w+)", body, flags=re.M))
    assert listed == set(cli_commands())


# --- Python API ---------------------------------------------------------------------------


def api_signatures() -> dict[str, str]:
    """``name -> "(args)"`` of every ``store.name(...)`` / ``Store.name(...)`` in a heading."""
    out = {}
    for heading in re.findall(r"^#{2,4} (.*)$", API, flags=re.M):
        for name, args in re.findall(r"`(?:store|Store)\.(\w+)(\([^`]*?\))(?: -> [^`]*)?`", heading):
            out[name] = args
    return out


def test_every_public_store_member_is_documented_in_api_md():
    missing = [n for n in public_store_members() if not documented(f"store.{n}", API) and not documented(f"Store.{n}", API)]
    assert missing == [], f"document these in docs/api.md: {missing}"


def _parse_params(args: str) -> list[tuple[str, str, str | None]]:
    """``"(a, b=1, *, c=None, **kw)"`` -> [(kind, name, default source)]."""
    params, kind = [], "positional"
    for item in (p.strip() for p in args[1:-1].split(",") if p.strip()):
        if item == "*":
            kind = "keyword"
        elif item.startswith("**"):
            params.append(("var_keyword", item[2:], None))
        else:
            name, _, default = item.partition("=")
            params.append((kind, name.strip(), default.strip() or None))
    return params


@pytest.mark.parametrize("name", sorted(api_signatures()))
def test_documented_signatures_match_the_code(name):
    documented_params = _parse_params(api_signatures()[name])
    kinds = {inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional", inspect.Parameter.KEYWORD_ONLY: "keyword",
             inspect.Parameter.VAR_KEYWORD: "var_keyword"}
    real = []
    for p in inspect.signature(getattr(Store, name)).parameters.values():
        if p.name in ("self", "cls"):
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        real.append((kinds[p.kind], p.name, default))
    assert [(k, n) for k, n, _ in documented_params] == [(k, n) for k, n, _ in real], name
    for (_, pname, doc_default), (_, _, real_default) in zip(documented_params, real):
        if doc_default is not None:
            assert ast.literal_eval(doc_default) == real_default, f"{name}({pname}=...)"
        else:
            assert real_default is None, f"docs/api.md omits the default of {name}({pname}=...)"


def test_the_main_calls_are_in_the_readme_table():
    rows = [line for line in section(README, "Use it from Python").splitlines() if line.startswith("| `")]
    in_table = {m for row in rows for m in re.findall(r"(?:store|Store)\.(\w+)\(", row)}
    assert set(README_TABLE_CALLS) <= in_table, f"missing from README's table: {set(README_TABLE_CALLS) - in_table}"
    assert in_table <= set(public_store_members())  # and it names nothing that does not exist


def test_every_package_export_is_documented_in_api_md():
    missing = [n for n in zenstore.__all__ if not documented(n, API) and not documented(f"zenstore.{n}", API)]
    assert missing == [], f"document these in docs/api.md: {missing}"


def test_store_options_table_matches_store_config():
    body = section(API, "`Store.create(path, dim=7680, metric=\"cosine\", **options) -> Store`")
    table = {}
    for row in body.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|", 2)]  # meanings may hold "|"
        if len(cells) == 3 and cells[0].startswith("`"):
            table[cells[0].strip("`")] = cells[1]
    defaults = StoreConfig()
    fields = [f for f in StoreConfig.__dataclass_fields__ if f != "extensions"]
    assert sorted(table) == sorted(fields)
    for name in fields:
        assert ast.literal_eval(table[name].strip("`")) == getattr(defaults, name), name
    assert documented("extensions", FORMAT)  # the one config field that is format-level only
    readme_row = next(line for line in README.splitlines() if line.startswith("| `Store.create("))
    assert set(re.findall(r"`(\w+)`", readme_row.split("options:")[1])) == set(fields) - {"dim", "metric"}


def test_error_tree_in_api_md_is_the_class_hierarchy():
    (tree,) = [b for b in fenced(section(API, "Errors")) if "ZenstoreError" in b]
    parents: list[tuple[int, type]] = []
    drawn = set()
    for line in tree.splitlines():
        m = re.match(r"^([│ ├└─]*)(\w+)(?: \((\w+)\))?$", line)
        assert m, f"unparsed line in the error tree: {line!r}"
        depth = len(m.group(1)) // 4
        cls = getattr(zenstore, m.group(2))
        while parents and parents[-1][0] >= depth:
            parents.pop()
        if parents:
            assert cls.__bases__[0] is parents[-1][1], f"{cls.__name__} is drawn under {parents[-1][1].__name__}"
        builtins = {b.__name__ for b in cls.__bases__[1:]}
        assert builtins == ({m.group(3)} if m.group(3) else set()), f"{cls.__name__}: built-in base"
        parents.append((depth, cls))
        drawn.add(cls.__name__)
    errors = {n for n in zenstore.__all__ if isinstance(getattr(zenstore, n), type)
              and issubclass(getattr(zenstore, n), zenstore.ZenstoreError)}
    assert drawn == errors


# --- examples that run --------------------------------------------------------------------


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    (example,) = fenced(section(README, "Use it from Python"), "python")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out.splitlines()
    # print(len(store), store.get(3).payload, bytes_per_vector) and the rerank hits
    assert out[0] == "1000 {'n': 3} 52"
    assert out[1].startswith("[Hit(id=3, score=") and out[1].count("Hit(") == 2
    assert (tmp_path / "docs.zen").is_dir()


def test_package_docstring_quick_start_runs(tmp_path, monkeypatch):
    doc = zenstore.__doc__
    body = doc.split("Quick start::\n", 1)[1]
    example = "\n".join(line[4:] for line in body.splitlines() if line.startswith("    ") or not line.strip())
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(example, "zenstore/__init__.py", "exec"), scope)
    assert len(scope["hits"]) == 1 and scope["hits"][0].id in (1, 2)
