"""The chart README's values table is generated from the `# --` comments of values.yaml and up to date."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "helm" / "sigaudit"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("gen_readme", REPO / "helm" / "gen-readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_readme"] = module
    spec.loader.exec_module(module)
    return module


gen = _load()


def test_committed_readme_is_up_to_date() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    values = (CHART / "values.yaml").read_text(encoding="utf-8")
    assert gen.render_readme(readme, values) == readme, "run: python helm/gen-readme.py"
    assert gen.main(["--check"]) == 0


def test_every_value_is_documented() -> None:
    assert gen.undocumented((CHART / "values.yaml").read_text(encoding="utf-8")) == []


def test_every_top_level_value_appears_in_the_readme() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    for key in yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8")):
        assert f"| `{key}" in readme, key


SAMPLE = """\
# -- Top-level switch.
enabled: true
server:
  # -- Port to listen on,
  # on two lines.
  port: 8080
  # not a doc comment
  host: ""
  # -- (int) Concurrency.
  concurrency: null
list:
  # -- Items.
  items:
    - name: a
      # -- not a key of the table: inside a list item
      value: 1
# -- Policy.
# @default -- an empty policy
policy:
  rules: []
"""


def test_parser_reads_descriptions_types_and_defaults() -> None:
    docs = {".".join(d.path): d for d in gen.parse_docs(SAMPLE)}
    assert set(docs) == {"enabled", "server.port", "server.concurrency", "list.items", "policy"}
    assert docs["server.port"].description == "Port to listen on, on two lines."
    assert docs["server.concurrency"].type_override == "int"
    assert docs["policy"].default_override == "an empty policy"
    table = gen.render_table(SAMPLE)
    assert "| `server.port` | int | `8080` | Port to listen on, on two lines. |" in table
    assert "| `server.concurrency` | int | `null` | Concurrency. |" in table
    assert '| `list.items` | list | `[{"name":"a","value":1}]` | Items. |' in table
    assert "| `policy` | object | an empty policy | Policy. |" in table


def test_undocumented_keys_are_reported() -> None:
    assert gen.undocumented(SAMPLE) == ["server.host"]


def test_stale_readme_is_detected(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "values.yaml").write_text("# -- A.\na: 1\n", encoding="utf-8")
    (chart / "README.md").write_text(f"# x\n{gen.START}\nold\n{gen.END}\n", encoding="utf-8")
    assert gen.main(["--check", "--chart", str(chart)]) == 1
    assert gen.main(["--chart", str(chart)]) == 0
    assert gen.main(["--check", "--chart", str(chart)]) == 0
    assert "| `a` | int | `1` | A. |" in (chart / "README.md").read_text(encoding="utf-8")
