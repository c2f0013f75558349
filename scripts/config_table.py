"""The settings table of docs/configuration.md, made from the Config dataclass.

    python scripts/config_table.py           # print it
    python scripts/config_table.py --write   # rewrite the table in the doc
"""

import dataclasses
import sys
from pathlib import Path

from jobmonitor.config import Config

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def table() -> str:
    rows = ["| setting | `serve` option | default | meaning |", "|---|---|---|---|"]
    for field in dataclasses.fields(Config):
        flag = f"`--{field.name.replace('_', '-')}`"
        option = flag if field.metadata["flag"] else "(config file)"
        default = "(none)" if field.default in (None, ()) else field.default
        rows.append(f"| `{field.name}` | {option} | `{default}` | {field.metadata['help']} |")
    return "\n".join(rows)


def main() -> None:
    if "--write" not in sys.argv:
        print(table())
        return
    text = DOC.read_text()
    start = text.index("| setting |")
    end = text.index("\n\n", start)
    DOC.write_text(text[:start] + table() + text[end:])


if __name__ == "__main__":
    main()
