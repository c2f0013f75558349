"""Print the settings table of docs/configuration.md from the Config dataclass.

    python scripts/config_table.py
"""

import dataclasses

from jobmonitor.config import Config


def main() -> None:
    print("| setting | `serve` option | default | meaning |")
    print("|---|---|---|---|")
    for field in dataclasses.fields(Config):
        option = f"`--{field.name.replace('_', '-')}`" if field.metadata["flag"] else "(config file)"
        default = "(none)" if field.default in (None, ()) else field.default
        print(f"| `{field.name}` | {option} | `{default}` | {field.metadata['help']} |")


if __name__ == "__main__":
    main()
